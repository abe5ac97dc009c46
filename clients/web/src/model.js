// The board document (docs/schema.md): `tasks`, `columns` and `meta` maps. Every user action
// is one transaction with the LOCAL origin, so it is one update for the server and one step
// for the undo manager.

import * as Y from 'yjs'
import { generateKeyBetween } from 'fractional-indexing'
import { randomId } from './session.js'

export const LOCAL = { name: 'local-user' }

const now = () => new Date().toISOString()

export function byPosition (a, b) {
  if (a.position !== b.position) return a.position < b.position ? -1 : 1
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0
}

function stringList (value) {
  if (!(value instanceof Y.Array)) return []
  return [...new Set(value.toArray().filter((v) => typeof v === 'string'))]
}

export class BoardModel {
  constructor (doc) {
    this.doc = doc
    this.tasks = doc.getMap('tasks')
    this.columns = doc.getMap('columns')
    this.meta = doc.getMap('meta')
    // cardsByColumn() is asked several times per action: computed once per change.
    this._byColumn = null
    this.tasks.observeDeep(() => { this._byColumn = null })
    this.undo = new Y.UndoManager([this.tasks, this.columns, this.meta], {
      trackedOrigins: new Set([LOCAL]),
      captureTimeout: 400
    })
  }

  transact (fn) {
    this.doc.transact(fn, LOCAL)
  }

  title () {
    const t = this.meta.get('title')
    return typeof t === 'string' ? t : ''
  }

  columnList () {
    const found = []
    this.columns.forEach((column, id) => {
      if (!(column instanceof Y.Map)) return
      found.push({ id, name: String(column.get('name') ?? ''), position: String(column.get('position') ?? '') })
    })
    return found.sort(byPosition)
  }

  /** A light summary of one task, enough to draw its card. */
  card (id) {
    const task = this.tasks.get(id)
    if (!(task instanceof Y.Map)) return null
    const checklist = task.get('checklist')
    let done = 0
    let total = 0
    if (checklist instanceof Y.Array) {
      checklist.forEach((item) => {
        if (!(item instanceof Y.Map)) return
        total++
        if (item.get('done') === 'true') done++
      })
    }
    const comments = task.get('comments')
    return {
      id,
      title: String(task.get('title') ?? ''),
      column: String(task.get('column') ?? ''),
      position: String(task.get('position') ?? ''),
      assignees: stringList(task.get('assignees')),
      labels: stringList(task.get('labels')),
      due: typeof task.get('due') === 'string' ? task.get('due') : null,
      checklist: { done, total },
      comments: comments instanceof Y.Array ? comments.length : 0
    }
  }

  /** Task ids grouped by column id, each list in display order (shared: do not modify). */
  cardsByColumn () {
    if (this._byColumn !== null) return this._byColumn
    const columns = new Map()
    this.tasks.forEach((task, id) => {
      if (!(task instanceof Y.Map)) return
      const column = String(task.get('column') ?? '')
      const position = String(task.get('position') ?? '')
      if (!columns.has(column)) columns.set(column, [])
      columns.get(column).push({ id, position })
    })
    for (const list of columns.values()) list.sort(byPosition)
    this._byColumn = columns
    return columns
  }

  /** A key that puts a task at `index` in the column, leaving `movingId` out of the count. */
  positionAt (columnId, index, movingId = null) {
    const others = (this.cardsByColumn().get(columnId) || []).filter((c) => c.id !== movingId)
    index = Math.max(0, Math.min(index, others.length))
    const before = index > 0 ? others[index - 1].position : null
    // The first key after `before`: with equal keys (two clients appended at once), go after both.
    let after = null
    for (let i = index; i < others.length; i++) {
      if (before === null || others[i].position > before) {
        after = others[i].position
        break
      }
    }
    try {
      return generateKeyBetween(before, after)
    } catch {
      // A malformed key written by another client: append after the last good one.
      return generateKeyBetween(before, null)
    }
  }

  addColumn (name) {
    const id = randomId()
    const last = this.columnList().at(-1)?.position ?? null
    this.transact(() => {
      this.columns.set(id, new Y.Map([['name', name], ['position', generateKeyBetween(last, null)]]))
    })
    return id
  }

  renameColumn (id, name) {
    const column = this.columns.get(id)
    if (column instanceof Y.Map && column.get('name') !== name) {
      this.transact(() => column.set('name', name))
    }
  }

  deleteColumn (id) {
    this.transact(() => {
      this.tasks.forEach((task, taskId) => {
        if (task instanceof Y.Map && task.get('column') === id) this.tasks.delete(taskId)
      })
      this.columns.delete(id)
    })
  }

  addTask (columnId, title) {
    const id = randomId()
    const stamp = now()
    const position = this.positionAt(columnId, Infinity)
    this.transact(() => {
      const task = new Y.Map()
      this.tasks.set(id, task)
      task.set('title', title)
      task.set('column', columnId)
      task.set('position', position)
      task.set('description', new Y.Text(''))
      task.set('assignees', new Y.Array())
      task.set('labels', new Y.Array())
      task.set('due', null)
      task.set('created_at', stamp)
      task.set('updated_at', stamp)
    })
    return id
  }

  moveTask (id, toColumn, index) {
    const task = this.tasks.get(id)
    if (!(task instanceof Y.Map)) return
    const position = this.positionAt(toColumn, index, id)
    this.transact(() => {
      if (task.get('column') !== toColumn) task.set('column', toColumn)
      task.set('position', position)
      task.set('updated_at', now())
    })
  }

  deleteTask (id) {
    this.transact(() => this.tasks.delete(id))
  }

  /** Change fields of a task: `fn(task)` runs inside the transaction. */
  editTask (id, fn) {
    const task = this.tasks.get(id)
    if (!(task instanceof Y.Map)) return
    this.transact(() => {
      fn(task)
      task.set('updated_at', now())
    })
  }

  setField (id, key, value) {
    const task = this.tasks.get(id)
    if (task instanceof Y.Map && task.get(key) !== value) this.editTask(id, (t) => t.set(key, value))
  }

  /** Add a name to `assignees` or `labels` (a set kept in a Y.Array). */
  addToSet (id, key, name) {
    this.editTask(id, (task) => {
      let list = task.get(key)
      if (!(list instanceof Y.Array)) {
        list = new Y.Array()
        task.set(key, list)
      }
      if (!list.toArray().includes(name)) list.push([name])
    })
  }

  removeFromSet (id, key, name) {
    this.editTask(id, (task) => {
      const list = task.get(key)
      if (!(list instanceof Y.Array)) return
      for (let i = list.length - 1; i >= 0; i--) if (list.get(i) === name) list.delete(i, 1)
    })
  }

  /** A nested Y.Array (checklist, comments), created on first use. */
  _array (task, key) {
    let list = task.get(key)
    if (!(list instanceof Y.Array)) {
      list = new Y.Array()
      task.set(key, list)
    }
    return list
  }

  addChecklistItem (id, text) {
    this.editTask(id, (task) => {
      this._array(task, 'checklist').push([new Y.Map([['id', randomId(8)], ['text', text], ['done', 'false']])])
    })
  }

  toggleChecklistItem (id, itemId) {
    this.editTask(id, (task) => {
      this._array(task, 'checklist').forEach((item) => {
        if (item instanceof Y.Map && item.get('id') === itemId) {
          item.set('done', item.get('done') === 'true' ? 'false' : 'true')
        }
      })
    })
  }

  removeChecklistItem (id, itemId) {
    this.editTask(id, (task) => {
      const list = this._array(task, 'checklist')
      for (let i = list.length - 1; i >= 0; i--) {
        const item = list.get(i)
        if (item instanceof Y.Map && item.get('id') === itemId) list.delete(i, 1)
      }
    })
  }

  addComment (id, author, text) {
    this.editTask(id, (task) => {
      this._array(task, 'comments').push([
        new Y.Map([['id', randomId(8)], ['author', author], ['text', text], ['created_at', now()]])
      ])
    })
  }

  /** Give a new board its title, project and the usual three columns, in one transaction. */
  initialise (title, project) {
    this.transact(() => {
      this.meta.set('title', title)
      if (project) this.meta.set('project', project)
      let last = null
      for (const name of ['To do', 'Doing', 'Done']) {
        last = generateKeyBetween(last, null)
        this.columns.set(randomId(), new Y.Map([['name', name], ['position', last]]))
      }
    })
    this.undo.clear()
  }
}
