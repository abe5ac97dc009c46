// The card detail: a modal dialog with every field of one task, live.

import * as Y from 'yjs'
import { bindText } from './textbinding.js'
import { announce, h, initials, inlineForm } from './dom.js'
import { ProblemError, SessionExpired } from './auth.js'

const TIME = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' })

/** Comments: the longest one the page sends (the server has its own limit), in characters. */
export const COMMENT_LIMITS = Object.freeze({ maxChars: 10_000 })

/** What to tell someone whose comment the server did not take. */
function commentRefusal (error) {
  if (error instanceof SessionExpired) return 'Your session has ended: log in again, then post the comment.'
  if (error instanceof ProblemError) {
    if (error.status === 403) return 'You may read this board but not comment on it.'
    if (error.status === 404) return 'This card no longer exists, so the comment was not posted.'
    if (error.status === 429) return 'Too many requests: wait a moment, then post the comment again.'
    return `The comment was not posted: ${error.message}`
  }
  return 'Could not reach the server: the comment was not posted. Try again.'
}

export class CardDialog {
  constructor (view) {
    this.view = view
    this.openId = null
    // Comments sent over REST and not yet seen in the board document:
    // { key, taskId, text, author, known: ids present when sent, id: the server's once answered }.
    this.pending = []
    this.pendingKeys = 0
    this.el = h('dialog', { class: 'card-dialog', 'aria-labelledby': 'card-dialog-title' })
    this.el.addEventListener('close', () => this.closed())
    document.body.append(this.el)
  }

  get model () {
    return this.view.model
  }

  open (id) {
    if (!this.model.card(id)) return
    this.returnFocus = document.activeElement
    this.openId = id
    this.build()
    if (!this.el.open) this.el.showModal()
    this.titleInput.focus()
    this.view.updatePresence(id)
    this.view.presenceSignature = null
    this.view.renderPresence()
  }

  close () {
    if (this.el.open) this.el.close()
    this.closed()
  }

  closed () {
    if (this.openId === null) return
    const id = this.openId
    this.openId = null
    this.unbindText?.()
    this.unbindText = null
    this.el.replaceChildren()
    const card = this.view.cardEls.get(id)
    ;(card?.button ?? this.returnFocus)?.focus?.()
    // Closing a modal dialog gives the focus back before this runs, so no focus event says
    // where the user is now: the card they return to, if it is still there.
    this.view.updatePresence(card && document.activeElement === card.button ? id : null)
  }

  task () {
    const task = this.model.tasks.get(this.openId)
    return task instanceof Y.Map ? task : null
  }

  /** The fields that do not keep their own state; rebuilt on every change of the task. */
  refresh () {
    if (this.openId === null) return
    if (!this.task()) {
      this.close()
      announce('The card was deleted')
      return
    }
    const card = this.model.card(this.openId)
    if (document.activeElement !== this.titleInput) this.titleInput.value = card.title
    this.titleInput.readOnly = this.view.readOnly
    const due = card.due || ''
    if (this.dueInput.value !== due) this.dueInput.value = due
    this.dueInput.disabled = this.view.readOnly
    this.columnSelect.disabled = this.view.readOnly
    this.columnSelect.replaceChildren(...this.model.columnList().map((c) =>
      h('option', { value: c.id, selected: c.id === card.column }, c.name)))
    this.deleteButton.hidden = this.view.readOnly
    this.descriptionInput.readOnly = this.view.readOnly
    this.renderSet('assignees', card.assignees, 'Assignee', this.assigneesEl)
    this.renderSet('labels', card.labels, 'Label', this.labelsEl)
    this.renderChecklist()
    this.renderComments()
    for (const form of this.el.querySelectorAll('form.inline-form')) form.hidden = this.view.readOnly
    // A commenter's board is read-only, but comments go over REST, which the server allows.
    this.commentForm.hidden = !this.view.canComment
  }

  build () {
    const id = this.openId
    this.titleInput = h('input', {
      id: 'card-title',
      type: 'text',
      class: 'card-title-input',
      oninput: (event) => this.model.setField(id, 'title', event.target.value)
    })
    this.columnSelect = h('select', {
      id: 'card-column',
      onchange: (event) => this.view.moveCard(id, event.target.value, Infinity)
    })
    this.dueInput = h('input', {
      id: 'card-due',
      type: 'date',
      onchange: (event) => this.model.setField(id, 'due', event.target.value || null)
    })
    this.descriptionInput = h('textarea', { id: 'card-description', rows: 6 })
    this.assigneesEl = h('ul', { class: 'chips', 'aria-label': 'Assignees' })
    this.labelsEl = h('ul', { class: 'chips', 'aria-label': 'Labels' })
    this.checklistEl = h('ul', { class: 'checklist', 'aria-label': 'Checklist' })
    this.commentsEl = h('ol', { class: 'comments', 'aria-label': 'Comments' })
    this.viewersEl = h('p', { class: 'card-viewers-line' })
    this.deleteButton = h('button', {
      type: 'button',
      class: 'danger',
      onclick: () => {
        const title = this.model.card(id)?.title
        this.close()
        this.model.deleteTask(id)
        announce(`Card ${title} deleted`)
      }
    }, 'Delete card')
    const commentInput = h('textarea', {
      id: 'card-comment',
      rows: 2,
      maxlength: String(COMMENT_LIMITS.maxChars),
      'aria-describedby': 'card-comment-error'
    })
    this.commentInput = commentInput
    // Present (and empty) from the start, so a screen reader reads out each refusal.
    this.commentError = h('p', { id: 'card-comment-error', class: 'comment-error', role: 'alert' })
    const commentForm = this.commentForm = h('form', {
      class: 'inline-form comment-form',
      onsubmit: (event) => {
        event.preventDefault()
        const text = commentInput.value.trim()
        if (!text) return
        this.commentError.textContent = ''
        commentInput.removeAttribute('aria-invalid')
        commentInput.value = ''
        if (this.view.auth) this.postComment(id, text)
        else this.model.addComment(id, this.view.session.user.name, text)
      }
    }, h('label', { for: 'card-comment' }, 'Add a comment'), commentInput, this.commentError, h('button', { type: 'submit' }, 'Comment'))

    this.el.replaceChildren(
      h('div', { class: 'dialog-head' },
        h('h2', { id: 'card-dialog-title', class: 'visually-hidden' }, 'Card'),
        h('label', { for: 'card-title', class: 'field-label' }, 'Title'),
        this.titleInput,
        h('button', { type: 'button', class: 'close', 'aria-label': 'Close card', onclick: () => this.close() }, '✕')),
      this.viewersEl,
      h('div', { class: 'dialog-body' },
        h('div', { class: 'dialog-main' },
          h('label', { for: 'card-description', class: 'field-label' }, 'Description'),
          this.descriptionInput,
          h('h3', {}, 'Checklist'),
          this.checklistEl,
          inlineForm({ label: 'New checklist item', button: 'Add item', placeholder: 'Add an item', name: 'checklist-item', onSubmit: (text) => this.model.addChecklistItem(id, text) }),
          h('h3', {}, 'Comments'),
          this.commentsEl,
          commentForm),
        h('div', { class: 'dialog-side' },
          h('label', { for: 'card-column', class: 'field-label' }, 'Column'),
          this.columnSelect,
          h('label', { for: 'card-due', class: 'field-label' }, 'Due date'),
          this.dueInput,
          h('h3', {}, 'Assignees'),
          this.assigneesEl,
          inlineForm({ label: 'Assign someone', button: 'Assign', placeholder: 'Name', name: 'assignee', onSubmit: (name) => this.model.addToSet(id, 'assignees', name) }),
          h('h3', {}, 'Labels'),
          this.labelsEl,
          inlineForm({ label: 'Add a label', button: 'Add label', placeholder: 'Label', name: 'label', onSubmit: (name) => this.model.addToSet(id, 'labels', name) }),
          this.deleteButton)))
    this.unbindText?.()
    let text = this.task().get('description')
    if (!(text instanceof Y.Text)) {
      // A careless client wrote a plain string: make it a Y.Text so edits merge from now on.
      const initial = typeof text === 'string' ? text : ''
      if (!this.view.readOnly) {
        this.model.editTask(id, (task) => task.set('description', new Y.Text(initial)))
        text = this.task().get('description')
      }
    }
    if (text instanceof Y.Text) {
      this.unbindText = bindText(this.descriptionInput, text, {
        transact: (fn) => this.model.editTask(id, fn),
        readOnly: this.view.readOnly
      })
    }
    this.refresh()
  }

  renderSet (key, names, what, listEl) {
    listEl.replaceChildren(...names.map((name) => h('li', { class: 'chip' },
      key === 'assignees' ? h('span', { class: 'avatar small', 'aria-hidden': 'true' }, initials(name)) : null,
      h('span', {}, name),
      this.view.readOnly
        ? null
        : h('button', {
          type: 'button',
          class: 'icon',
          'aria-label': `Remove ${what.toLowerCase()} ${name}`,
          onclick: () => this.model.removeFromSet(this.openId, key, name)
        }, '✕'))))
    if (!names.length) listEl.replaceChildren(h('li', { class: 'none' }, 'None'))
  }

  renderChecklist () {
    const list = this.task().get('checklist')
    const items = list instanceof Y.Array ? list.toArray().filter((i) => i instanceof Y.Map) : []
    const focusedItem = document.activeElement?.dataset?.item
    this.checklistEl.replaceChildren(...items.map((item) => {
      const itemId = String(item.get('id'))
      const boxId = `check-${itemId}`
      return h('li', {},
        h('input', {
          type: 'checkbox',
          id: boxId,
          checked: item.get('done') === 'true',
          disabled: this.view.readOnly,
          dataset: { item: itemId },
          onchange: () => this.model.toggleChecklistItem(this.openId, itemId)
        }),
        h('label', { for: boxId }, String(item.get('text') ?? '')),
        this.view.readOnly
          ? null
          : h('button', {
            type: 'button',
            class: 'icon',
            'aria-label': `Remove item ${item.get('text')}`,
            onclick: () => this.model.removeChecklistItem(this.openId, itemId)
          }, '✕'))
    }))
    if (focusedItem) this.checklistEl.querySelector(`[data-item="${focusedItem}"]`)?.focus()
  }

  /** The open card's comments as the board document has them. */
  storedComments () {
    const list = this.task()?.get('comments')
    const items = list instanceof Y.Array ? list.toArray().filter((i) => i instanceof Y.Map) : []
    return items.map((c) => ({
      id: String(c.get('id') ?? ''),
      author: String(c.get('author') ?? ''),
      text: String(c.get('text') ?? ''),
      createdAt: String(c.get('created_at') ?? '')
    }))
  }

  /**
   * Post a comment over REST (a commenter's socket may not change the board) and show it at
   * once; it gives way to the stored one when the board update brings it over the socket.
   */
  async postComment (taskId, text) {
    const entry = {
      key: ++this.pendingKeys,
      taskId,
      text,
      author: this.view.session.user.name,
      known: new Set(this.storedComments().map((c) => c.id)),
      id: null
    }
    this.pending.push(entry)
    this.renderComments()
    const path = `/v1/boards/${encodeURIComponent(this.view.boardId)}/tasks/${encodeURIComponent(taskId)}/comments`
    try {
      const made = await this.view.auth.request(path, { method: 'POST', body: { text } })
      entry.id = typeof made?.id === 'string' ? made.id : null
      if (entry.id === null) this.pending = this.pending.filter((p) => p !== entry)
      announce('Comment posted')
    } catch (error) {
      this.pending = this.pending.filter((p) => p !== entry)
      if (!(error instanceof ProblemError) && !(error instanceof SessionExpired)) console.warn('Boardcast: comment not posted', error)
      if (this.openId === taskId) {
        this.commentError.textContent = commentRefusal(error)
        this.commentInput.setAttribute('aria-invalid', 'true')
        // Nothing typed is lost: the text comes back unless something new was typed meanwhile.
        if (!this.commentInput.value) this.commentInput.value = text
      }
    }
    if (this.openId === taskId) this.renderComments()
  }

  /** Pending comments of the open card still to show: not yet in the board document. */
  visiblePending (stored) {
    const ids = new Set(stored.map((c) => c.id))
    // Answered and arrived over the socket: the stored comment replaces it for good.
    this.pending = this.pending.filter((p) => !(p.id && ids.has(p.id)))
    const claimed = new Set()
    return this.pending.filter((p) => {
      if (p.taskId !== this.openId) return false
      // Arrived before the server's answer: the first new comment with its author and text.
      const match = stored.find((c) => !p.known.has(c.id) && !claimed.has(c.id) &&
        (p.id ? c.id === p.id : c.text === p.text && c.author === p.author))
      if (match) claimed.add(match.id)
      return !match
    })
  }

  renderComments () {
    const stored = this.storedComments()
    const pending = this.visiblePending(stored)
    this.commentsEl.replaceChildren(
      ...stored.map((c) => {
        const at = new Date(c.createdAt)
        return h('li', { class: 'comment', dataset: { comment: c.id } },
          h('p', { class: 'comment-head' },
            h('strong', {}, c.author),
            ' ',
            Number.isNaN(at.getTime()) ? '' : h('time', { datetime: at.toISOString() }, TIME.format(at))),
          h('p', { class: 'comment-text' }, c.text))
      }),
      ...pending.map((p) => h('li', { class: 'comment is-pending', 'aria-busy': 'true' },
        h('p', { class: 'comment-head' }, h('strong', {}, p.author), ' ', h('span', { class: 'comment-state' }, 'Sending…')),
        h('p', { class: 'comment-text' }, p.text))))
    if (!stored.length && !pending.length) this.commentsEl.replaceChildren(h('li', { class: 'none' }, 'No comments yet.'))
  }

  renderViewers (onCards) {
    if (this.openId === null) return
    const users = onCards.get(this.openId) || []
    this.viewersEl.textContent = users.length ? `Also here: ${users.map((u) => u.name).join(', ')}` : ''
  }
}
