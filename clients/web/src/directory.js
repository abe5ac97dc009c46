// Projects and boards, live. The lists are a read-only Yjs document that the server keeps and
// pushes: a person's own list of projects (room `boardcast.projects-of.<user id>`, see
// crdt/project_list.py), or, for administrators and on servers without log-ins, the directory
// of every project (room DIRECTORY_ROOM, crdt/projects.py). It opens over the standard socket
// like a board, so a project someone adds you to, renames or takes you out of appears or goes
// at once, without polling. Both documents have the same shape:
//   projects: Y.Map  project id -> Y.Map { name, position, role? }
//   boards:   Y.Map  board id   -> Y.Map { title, project, position }
// Nobody writes them over the socket (the server refuses it): projects and boards are created
// through the REST API (restdirectory.js), and the change comes back on the socket.

import * as Y from 'yjs'
import { BoardConnection } from './connection.js'
import { byPosition } from './model.js'

export const DIRECTORY_ROOM = 'boardcast.directory'
const LIST_PREFIX = 'boardcast.projects-of.'

/** The room of a person's own list of projects. */
export function listRoom (userId) {
  return LIST_PREFIX + userId
}

/** Boards created in this page and not yet written: id -> { title, project }. */
export const newBoards = new Map()

/**
 * The live lists on their connection. The home page and the board view use `loaded`, `error`,
 * `projectList`, `boardList`, `boardTitle`, `subscribe`, `createProject` and `createBoard`;
 * with accounts, the board view also asks `roleOn`.
 */
export class LiveDirectory {
  constructor ({ room, params = {}, rest }) {
    this.connection = new BoardConnection(room, { params })
    this.doc = this.connection.doc
    this.projects = this.doc.getMap('projects')
    this.boards = this.doc.getMap('boards')
    this.rest = rest
    this._titles = new Map() // titles of boards made here, until the list has them
    if (rest.withAccounts) this.roleOn = (boardId, userId) => rest.roleOn(boardId, userId)
  }

  get loaded () {
    return Boolean(this.connection.state.synced) || this.projects.size > 0
  }

  get error () {
    const closed = this.connection.state.closed
    if (!closed || closed.code === 4401) return null // a fresh token reconnects it
    return `The list of projects is not available (${closed.reason || `code ${closed.code}`}).`
  }

  /** Call `listener` after every change of the lists or of the connection; returns the unsubscribe. */
  subscribe (listener) {
    const observer = () => listener()
    this.projects.observeDeep(observer)
    this.boards.observeDeep(observer)
    let seen = this._connectionKey()
    const onChange = () => {
      const now = this._connectionKey()
      if (now !== seen) {
        seen = now
        listener()
      }
    }
    this.connection.addEventListener('change', onChange)
    return () => {
      this.projects.unobserveDeep(observer)
      this.boards.unobserveDeep(observer)
      this.connection.removeEventListener('change', onChange)
    }
  }

  projectList () {
    const found = []
    this.projects.forEach((p, id) => {
      if (!(p instanceof Y.Map)) return
      const role = p.get('role')
      found.push({
        id,
        name: String(p.get('name') ?? id),
        position: String(p.get('position') ?? ''),
        role: typeof role === 'string' && role ? role : null
      })
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

  boardTitle (id) {
    const entry = this.boards.get(id)
    return entry instanceof Y.Map ? entry.get('title') : this._titles.get(id)
  }

  async createProject (name) {
    return this.rest.createProject(name)
  }

  async createBoard (title, projectId) {
    const board = await this.rest.createBoard(title, projectId)
    this._titles.set(board.id, board.name)
    return board.id
  }

  /** Connect again if the server closed the socket for want of a fresh token. */
  reload () {
    if (this.connection.state.closed?.code === 4401) this.connection.reconnect()
  }

  destroy () {
    this.connection.destroy()
  }

  _connectionKey () {
    const state = this.connection.state
    return `${state.synced}/${state.closed?.code ?? ''}`
  }
}
