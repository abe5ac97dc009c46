// One board: columns of cards, drag and drop, keyboard moves, presence, undo.

import { BoardModel } from './model.js'
import { CardDialog } from './card.js'
import { announce, h, initials, inlineForm } from './dom.js'
import { newBoards } from './directory.js'

const SHORT_DATE = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric' })

function formatDue (due) {
  const date = new Date(`${due}T00:00:00`)
  return Number.isNaN(date.getTime()) ? due : SHORT_DATE.format(date)
}

export class BoardView {
  constructor (main, { boardId, connection, directory, session, auth = null, onTitle, onNotice }) {
    this.main = main
    this.boardId = boardId
    // With accounts: comments are posted over REST (a commenter's socket is read-only).
    this.auth = auth
    this.commenter = false // read-only, yet allowed to comment
    this.connection = connection
    this.directory = directory
    this.session = session
    this.onTitle = onTitle
    this.onNotice = onNotice
    this.model = new BoardModel(connection.doc)
    this.readOnly = session.role === 'viewer'
    this.cardEls = new Map() // task id -> card element
    this.columnEls = new Map() // column id -> { section, list, heading }
    this.dirty = new Set() // task ids to redraw
    this.structureDirty = true
    this.frame = 0
    this.dialog = new CardDialog(this)

    this.root = h('div', { class: 'board' })
    this.titleEl = h('h1', { class: 'board-title' })
    this.readOnlyNote = h('p', { class: 'read-only-note' }, 'View only: you can read this board but not change it.')
    this.columnsEl = h('div', { class: 'columns', role: 'list', 'aria-label': 'Columns' })
    this.addColumnForm = inlineForm({
      label: 'New column name',
      button: 'Add column',
      placeholder: 'New column',
      name: 'new-column',
      onSubmit: (name) => {
        this.model.addColumn(name)
        announce(`Column ${name} added`)
      }
    })
    this.emptyNote = h('p', { class: 'empty' }, 'Loading the board…')
    this.root.append(
      h('div', { class: 'board-header' }, this.titleEl, this.readOnlyNote),
      h('p', { class: 'visually-hidden', id: 'board-help' },
        'Press Enter on a card to open it. Shift with the arrow keys moves the card: left and right to another column, up and down within its column.'),
      this.emptyNote,
      this.columnsEl,
      h('div', { class: 'add-column' }, this.addColumnForm))
    main.replaceChildren(this.root)
    main.focus({ preventScroll: true })

    this.onTasks = (events) => {
      for (const event of events) {
        if (event.target === this.model.tasks) {
          for (const key of event.keysChanged) this.dirty.add(key)
          this.structureDirty = true
        } else {
          const id = event.path[0]
          if (typeof id === 'string') this.dirty.add(id)
          // A move changes an order, not just a card.
          if (event.path.length === 1 && event.keysChanged && (event.keysChanged.has('position') || event.keysChanged.has('column'))) {
            this.structureDirty = true
          }
        }
      }
      this.schedule()
      this.dialog.refresh()
    }
    this.onColumns = () => {
      this.structureDirty = true
      this.columnsChanged = true
      this.schedule()
      this.dialog.refresh()
    }
    this.onMeta = () => this.showTitle()
    this.model.tasks.observeDeep(this.onTasks)
    this.model.columns.observeDeep(this.onColumns)
    this.model.meta.observe(this.onMeta)
    this.onAwareness = () => this.renderPresence()
    connection.awareness.on('change', this.onAwareness)
    this.onSync = (synced) => {
      if (!synced) return
      const pending = newBoards.get(boardId)
      if (pending && !this.readOnly) {
        newBoards.delete(boardId)
        if (this.model.columns.size === 0) this.model.initialise(pending.title, pending.project)
      }
      this.synced = true
      this.columnsChanged = true
      this.structureDirty = true
      this.schedule()
    }
    connection.provider.on('sync', this.onSync)
    this.onDenied = () => {
      // The server refused an edit: this session is read-only there, whatever we thought.
      this.setReadOnly(true)
      this.onNotice('This board is read-only for you: your change was not saved.')
    }
    connection.addEventListener('denied', this.onDenied)

    this.undoButton = document.getElementById('undo')
    this.redoButton = document.getElementById('redo')
    this.onUndoClick = () => this.undo()
    this.onRedoClick = () => this.redo()
    this.undoButton.addEventListener('click', this.onUndoClick)
    this.redoButton.addEventListener('click', this.onRedoClick)
    this.onStack = () => this.showUndo()
    for (const event of ['stack-item-added', 'stack-item-popped', 'stack-cleared']) this.model.undo.on(event, this.onStack)
    this.onKey = (event) => this.globalKey(event)
    document.addEventListener('keydown', this.onKey)
    document.getElementById('undo-tools').hidden = false
    document.getElementById('presence').hidden = false

    this.setReadOnly(this.readOnly)
    this.updatePresence()
    this.showTitle()
    this.showUndo()
    this.schedule()
  }

  /** Whether this person may comment: anyone who may edit, and a commenter. */
  get canComment () {
    return !this.readOnly || (this.commenter && Boolean(this.auth))
  }

  setReadOnly (readOnly, { canComment } = {}) {
    this.readOnly = readOnly
    if (canComment !== undefined) this.commenter = canComment
    this.root.classList.toggle('read-only', readOnly)
    this.readOnlyNote.hidden = !readOnly
    this.readOnlyNote.textContent = this.canComment
      ? 'View only: you can read this board and comment on its cards, but not change them.'
      : 'View only: you can read this board but not change it.'
    this.addColumnForm.hidden = readOnly
    for (const el of this.root.querySelectorAll('.add-card, .column-tools')) el.hidden = readOnly
    for (const el of this.cardEls.values()) el.draggable = !readOnly
    this.showUndo()
    this.dialog.refresh()
  }

  showTitle () {
    const title = this.model.title() || this.directory.boardTitle(this.boardId) || this.boardId
    this.titleEl.textContent = title
    this.onTitle(title)
  }

  showUndo () {
    this.undoButton.disabled = this.readOnly || this.model.undo.undoStack.length === 0
    this.redoButton.disabled = this.readOnly || this.model.undo.redoStack.length === 0
  }

  undo () {
    if (this.readOnly || !this.model.undo.canUndo()) return
    this.model.undo.undo()
    announce('Undone')
  }

  redo () {
    if (this.readOnly || !this.model.undo.canRedo()) return
    this.model.undo.redo()
    announce('Redone')
  }

  globalKey (event) {
    const target = event.target
    const typing = target instanceof HTMLElement && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName))
    const mod = event.ctrlKey || event.metaKey
    if (!mod || typing) return
    const key = event.key.toLowerCase()
    if (key === 'z' && !event.shiftKey) {
      event.preventDefault()
      this.undo()
    } else if ((key === 'z' && event.shiftKey) || key === 'y') {
      event.preventDefault()
      this.redo()
    }
  }

  schedule () {
    if (this.frame) return
    this.frame = requestAnimationFrame(() => {
      this.frame = 0
      this.render()
    })
  }

  /** Draw what changed since the last frame. */
  render () {
    const columns = this.model.columnList()
    if (this.columnsChanged || this.columnEls.size !== columns.length) {
      this.columnsChanged = false
      this.renderColumns(columns)
    }
    const hasBoard = columns.length > 0
    this.emptyNote.hidden = hasBoard
    this.emptyNote.textContent = this.synced || this.connection.state.synced
      ? (this.readOnly ? 'This board has no columns.' : 'This board has no columns yet: add one.')
      : 'Loading the board…'
    for (const id of this.dirty) {
      const el = this.cardEls.get(id)
      const card = this.model.card(id)
      if (!card) {
        el?.remove()
        this.cardEls.delete(id)
      } else if (el) {
        this.fillCard(el, card)
      }
    }
    this.dirty.clear()
    if (this.structureDirty) {
      this.structureDirty = false
      const byColumn = this.model.cardsByColumn()
      // Cards whose column does not exist (it was deleted while they were added) show in
      // the first column, so that someone can move them.
      const known = new Set(columns.map((c) => c.id))
      const orphans = []
      for (const [columnId, list] of byColumn) if (!known.has(columnId)) orphans.push(...list)
      columns.forEach((column, index) => {
        let list = byColumn.get(column.id) || []
        if (index === 0 && orphans.length) list = list.concat(orphans)
        this.reconcile(this.columnEls.get(column.id), list)
      })
    }
    this.renderPresence()
  }

  renderColumns (columns) {
    const seen = new Set()
    let node = this.columnsEl.firstChild
    for (const column of columns) {
      seen.add(column.id)
      let entry = this.columnEls.get(column.id)
      if (!entry) {
        entry = this.makeColumn(column.id)
        this.columnEls.set(column.id, entry)
      }
      entry.heading.textContent = column.name
      entry.list.setAttribute('aria-label', `Cards in ${column.name}`)
      entry.addForm.input.previousSibling.textContent = `New card in ${column.name}`
      entry.rename.setAttribute('aria-label', `Rename column ${column.name}`)
      entry.remove.setAttribute('aria-label', `Delete column ${column.name}`)
      if (entry.section !== node) this.columnsEl.insertBefore(entry.section, node)
      else node = node.nextSibling
    }
    for (const [id, entry] of this.columnEls) {
      if (!seen.has(id)) {
        entry.section.remove()
        this.columnEls.delete(id)
      }
    }
    this.structureDirty = true
  }

  makeColumn (columnId) {
    const headingId = `col-${columnId}`
    const heading = h('h2', { id: headingId })
    const count = h('span', { class: 'count' })
    const list = h('ol', { class: 'cards', dataset: { column: columnId } })
    const rename = h('button', {
      type: 'button',
      class: 'icon',
      onclick: () => {
        const name = prompt('Column name', heading.textContent)
        if (name && name.trim()) this.model.renameColumn(columnId, name.trim())
      }
    }, '✎')
    const remove = h('button', {
      type: 'button',
      class: 'icon',
      onclick: () => {
        if (confirm(`Delete the column “${heading.textContent}” and its cards?`)) this.model.deleteColumn(columnId)
      }
    }, '×')
    const addForm = inlineForm({
      label: 'New card',
      button: 'Add card',
      placeholder: 'Add a card',
      name: `new-card-${columnId}`,
      onSubmit: (title) => {
        this.model.addTask(columnId, title)
        announce(`Card ${title} added to ${heading.textContent}`)
      }
    })
    addForm.classList.add('add-card')
    const tools = h('div', { class: 'column-tools' }, rename, remove)
    const section = h('section', { class: 'column', role: 'listitem', 'aria-labelledby': headingId, dataset: { column: columnId } },
      h('div', { class: 'column-header' }, heading, count, tools),
      list,
      addForm)
    addForm.hidden = this.readOnly
    tools.hidden = this.readOnly
    this.wireDrop(list, columnId)
    return { section, list, heading, count, addForm, rename, remove }
  }

  /** Put the cards of one column in order, touching only cards out of place. */
  reconcile (entry, list) {
    const parent = entry.list
    let node = parent.firstChild
    for (const { id } of list) {
      let el = this.cardEls.get(id)
      if (!el) {
        el = this.makeCard(id)
        if (!el) continue
      }
      if (el !== node) parent.insertBefore(el, node)
      else node = node.nextSibling
    }
    while (node) {
      const next = node.nextSibling
      // A card that left this column is already elsewhere; anything still here is stale.
      node.remove()
      node = next
    }
    if (entry.count.textContent !== String(list.length)) {
      entry.count.textContent = String(list.length)
      entry.count.setAttribute('aria-label', `${list.length} cards`)
    }
  }

  makeCard (id) {
    const card = this.model.card(id)
    if (!card) return null
    const button = h('button', { type: 'button', class: 'card-open', 'aria-describedby': 'board-help' })
    const el = h('li', { class: 'card', dataset: { id } }, button)
    el.draggable = !this.readOnly
    el.button = button
    button.addEventListener('click', () => this.dialog.open(id))
    button.addEventListener('focus', () => this.setFocusCard(id))
    button.addEventListener('keydown', (event) => this.cardKey(event, id))
    el.addEventListener('dragstart', (event) => {
      if (this.readOnly) return event.preventDefault()
      event.dataTransfer.setData('text/x-boardcast-card', id)
      event.dataTransfer.setData('text/plain', card.title)
      event.dataTransfer.effectAllowed = 'move'
      el.classList.add('dragging')
      this.dragging = id
    })
    el.addEventListener('dragend', () => {
      el.classList.remove('dragging')
      this.dragging = null
      this.clearDropMarker()
    })
    this.cardEls.set(id, el)
    this.fillCard(el, card)
    return el
  }

  fillCard (el, card) {
    // Most changes (typing in a description, updated_at) change nothing the card shows: on a
    // big board, leaving its DOM alone spares the browser a style and layout pass.
    const signature = JSON.stringify(card)
    if (el.signature === signature) return
    el.signature = signature
    const parts = [h('span', { class: 'card-title' }, card.title || 'Untitled')]
    const meta = []
    for (const label of card.labels) meta.push(h('span', { class: 'label' }, label))
    if (card.due) meta.push(h('span', { class: 'due' }, h('span', { class: 'visually-hidden' }, 'Due '), formatDue(card.due)))
    if (card.checklist.total) meta.push(h('span', { class: 'check' }, `✓ ${card.checklist.done}/${card.checklist.total}`))
    if (card.comments) meta.push(h('span', { class: 'comments' }, `${card.comments} comment${card.comments === 1 ? '' : 's'}`))
    if (card.assignees.length) {
      meta.push(h('span', { class: 'assignees' },
        h('span', { class: 'visually-hidden' }, `Assigned to ${card.assignees.join(', ')}`),
        card.assignees.map((name) => h('span', { class: 'assignee', title: name, 'aria-hidden': 'true' }, initials(name)))))
    }
    if (meta.length) parts.push(h('span', { class: 'card-meta' }, meta))
    el.button.replaceChildren(...parts)
    el.title = card.title
  }

  wireDrop (list, columnId) {
    list.addEventListener('dragover', (event) => {
      if (!this.dragging || this.readOnly) return
      event.preventDefault()
      event.dataTransfer.dropEffect = 'move'
      const index = this.dropIndex(list, event.clientY)
      this.showDropMarker(list, index)
    })
    list.addEventListener('dragleave', (event) => {
      if (!list.contains(event.relatedTarget)) this.clearDropMarker()
    })
    list.addEventListener('drop', (event) => {
      event.preventDefault()
      const id = event.dataTransfer.getData('text/x-boardcast-card') || this.dragging
      if (!id || this.readOnly) return
      const index = this.dropIndex(list, event.clientY)
      this.clearDropMarker()
      this.moveCard(id, columnId, index)
    })
  }

  /** Where a drop at height y lands, counted among the column's cards without the moving one. */
  dropIndex (list, y) {
    let index = 0
    for (const el of list.children) {
      if (!el.classList.contains('card') || el.dataset.id === this.dragging) continue
      const box = el.getBoundingClientRect()
      if (y < box.top + box.height / 2) return index
      index++
    }
    return index
  }

  showDropMarker (list, index) {
    this.clearDropMarker()
    const cards = [...list.children].filter((el) => el.classList.contains('card') && el.dataset.id !== this.dragging)
    const marker = h('li', { class: 'drop-marker', 'aria-hidden': 'true' })
    list.insertBefore(marker, cards[index] || null)
    this.marker = marker
  }

  clearDropMarker () {
    this.marker?.remove()
    this.marker = null
  }

  moveCard (id, columnId, index) {
    this.model.moveTask(id, columnId, index)
    const column = this.model.columns.get(columnId)?.get('name')
    announce(`Moved to ${column}, position ${index + 1}`)
  }

  /** Shift+arrows move the focused card; the focus follows it. */
  cardKey (event, id) {
    if (!event.shiftKey || this.readOnly) return
    const card = this.model.card(id)
    if (!card) return
    const columns = this.model.columnList()
    const byColumn = this.model.cardsByColumn()
    let columnIndex = columns.findIndex((c) => c.id === card.column)
    const inColumn = (byColumn.get(card.column) || []).map((c) => c.id)
    let index = inColumn.indexOf(id)
    if (event.key === 'ArrowUp') index = Math.max(0, index - 1)
    else if (event.key === 'ArrowDown') index = Math.min(inColumn.length - 1, index + 1)
    else if (event.key === 'ArrowLeft' || event.key === 'ArrowRight') {
      const next = columnIndex + (event.key === 'ArrowLeft' ? -1 : 1)
      if (next < 0 || next >= columns.length) return
      columnIndex = next
      const target = (byColumn.get(columns[next].id) || [])
      index = Math.min(index, target.length)
    } else return
    event.preventDefault()
    this.moveCard(id, columns[columnIndex].id, index)
    // Re-render now so the focused element is in its new place.
    cancelAnimationFrame(this.frame)
    this.frame = 0
    this.render()
    this.cardEls.get(id)?.button.focus()
  }

  setFocusCard (id) {
    if (this.dialog.openId && this.dialog.openId !== id) return
    this.updatePresence(id)
  }

  updatePresence (card = undefined) {
    const awareness = this.connection.awareness
    const previous = awareness.getLocalState() || {}
    awareness.setLocalState({
      user: { id: this.session.user.id, name: this.session.user.name, colour: this.session.user.colour },
      card: card === undefined ? (previous.card ?? null) : card
    })
  }

  renderPresence () {
    const awareness = this.connection.awareness
    const list = document.getElementById('presence-list')
    const people = []
    const onCards = new Map()
    for (const [clientId, state] of awareness.getStates()) {
      if (!state || !state.user) continue
      const you = clientId === awareness.clientID
      people.push({ ...state.user, card: state.card, you, clientId })
      if (!you && state.card) {
        if (!onCards.has(state.card)) onCards.set(state.card, [])
        onCards.get(state.card).push(state.user)
      }
    }
    people.sort((a, b) => (a.you === b.you ? a.name.localeCompare(b.name) : a.you ? -1 : 1))
    // Redrawn only when who is where changed (titles of the cards they are on included).
    const signature = JSON.stringify([people, [...onCards], people.map((p) => p.card && this.model.card(p.card)?.title),
      [...onCards.keys()].map((id) => this.cardEls.get(id)?.isConnected)])
    if (signature === this.presenceSignature) return
    this.presenceSignature = signature
    list.replaceChildren(...people.map((p) => {
      const cardTitle = p.card ? this.model.card(p.card)?.title : null
      const where = cardTitle ? `on card “${cardTitle}”` : 'on the board'
      return h('li', { class: 'person', title: `${p.name}${p.you ? ' (you)' : ''}, ${where}` },
        h('span', { class: 'avatar', style: `background:${p.colour}`, 'aria-hidden': 'true' }, initials(p.name)),
        h('span', { class: 'person-name' }, `${p.name}${p.you ? ' (you)' : ''}`),
        h('span', { class: 'visually-hidden' }, `, ${where}`))
    }))
    for (const el of this.root.querySelectorAll('.card-viewers')) el.remove()
    for (const [cardId, users] of onCards) {
      const el = this.cardEls.get(cardId)
      if (!el) continue
      el.append(h('span', { class: 'card-viewers' },
        users.map((u) => h('span', { class: 'avatar small', style: `background:${u.colour}`, title: `${u.name} is here` }, initials(u.name))),
        h('span', { class: 'visually-hidden' }, `${users.map((u) => u.name).join(', ')} on this card`)))
    }
    this.dialog.renderViewers(onCards)
  }

  destroy () {
    cancelAnimationFrame(this.frame)
    this.dialog.close()
    this.model.tasks.unobserveDeep(this.onTasks)
    this.model.columns.unobserveDeep(this.onColumns)
    this.model.meta.unobserve(this.onMeta)
    this.connection.awareness.off('change', this.onAwareness)
    this.connection.removeEventListener('denied', this.onDenied)
    this.undoButton.removeEventListener('click', this.onUndoClick)
    this.redoButton.removeEventListener('click', this.onRedoClick)
    document.removeEventListener('keydown', this.onKey)
    document.getElementById('presence-list').replaceChildren()
    this.model.undo.destroy()
  }
}
