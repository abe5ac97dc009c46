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

export class DirectoryModel {
  constructor (doc) {
    this.doc = doc
    this.projects = doc.getMap('projects')
    this.boards = doc.getMap('boards')
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
