// Projects and boards: the project directory, a shared Yjs document of its own (room
// DIRECTORY_ROOM; the server's side is crdt/projects.py, which the REST API writes), so the
// lists sync live, work offline and are stored like any board:
//   projects: Y.Map  project id -> Y.Map { name, position, created_at }
//   boards:   Y.Map  board id   -> Y.Map { title, project, position, created_at }
// A board's own `meta` (title, project) is written too, so the server knows the same.

import * as Y from 'yjs'
import { generateKeyBetween } from 'fractional-indexing'
import { byPosition, LOCAL } from './model.js'
import { randomId } from './session.js'

export const DIRECTORY_ROOM = 'boardcast.directory'

/** Boards created in this page and not yet written: id -> { title, project }. */
export const newBoards = new Map()

/**
 * The directory document on its connection. The home page and the board view use only
 * `loaded`, `error`, `projectList`, `boardList`, `boardTitle`, `subscribe`, `createProject`
 * and `createBoard`, which RestDirectory (restdirectory.js) has too.
 */
export class DirectoryModel {
  constructor (doc, connection = null) {
    this.doc = doc
    this.connection = connection
    this.projects = doc.getMap('projects')
    this.boards = doc.getMap('boards')
    this.error = null
  }

  get loaded () {
    return Boolean(this.connection?.state.synced) || this.projects.size > 0
  }

  /** Call `listener` after every change of the lists or of `loaded`; returns the unsubscribe. */
  subscribe (listener) {
    const observer = () => listener()
    this.projects.observeDeep(observer)
    this.boards.observeDeep(observer)
    let wasSynced = this.connection?.state.synced
    const onChange = () => {
      if (this.connection.state.synced !== wasSynced) {
        wasSynced = this.connection.state.synced
        listener()
      }
    }
    this.connection?.addEventListener('change', onChange)
    return () => {
      this.projects.unobserveDeep(observer)
      this.boards.unobserveDeep(observer)
      this.connection?.removeEventListener('change', onChange)
    }
  }

  boardTitle (id) {
    const entry = this.boards.get(id)
    return entry instanceof Y.Map ? entry.get('title') : undefined
  }

  async createProject (name) {
    return this.addProject(name)
  }

  /** A board's directory entry now; the board view writes its title and columns. */
  async createBoard (title, projectId) {
    const id = this.addBoard(title, projectId)
    newBoards.set(id, { title, project: projectId })
    return id
  }

  projectList () {
    const found = []
    this.projects.forEach((p, id) => {
      if (p instanceof Y.Map) found.push({ id, name: String(p.get('name') ?? ''), position: String(p.get('position') ?? '') })
    })
    return found.sort(byPosition)
  }

  boardList (projectId) {
    const found = []
    this.boards.forEach((b, id) => {
      if (!(b instanceof Y.Map)) return
      const project = String(b.get('project') ?? '')
      if (projectId !== undefined && project !== projectId) return
      found.push({ id, title: String(b.get('title') ?? id), project, position: String(b.get('position') ?? '') })
    })
    return found.sort(byPosition)
  }

  addProject (name) {
    const id = randomId()
    const last = this.projectList().at(-1)?.position ?? null
    this.doc.transact(() => {
      this.projects.set(id, new Y.Map([
        ['name', name],
        ['position', generateKeyBetween(last, null)],
        ['created_at', new Date().toISOString()]
      ]))
    }, LOCAL)
    return id
  }

  addBoard (title, projectId) {
    const id = randomId()
    const last = this.boardList(projectId).at(-1)?.position ?? null
    this.doc.transact(() => {
      this.boards.set(id, new Y.Map([
        ['title', title],
        ['project', projectId],
        ['position', generateKeyBetween(last, null)],
        ['created_at', new Date().toISOString()]
      ]))
    }, LOCAL)
    return id
  }

  renameBoard (id, title) {
    const board = this.boards.get(id)
    if (board instanceof Y.Map && board.get('title') !== title) {
      this.doc.transact(() => board.set('title', title), LOCAL)
    }
  }
}
