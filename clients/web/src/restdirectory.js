// Projects and boards from the REST API, for servers that ask for a log-in: there the shared
// directory document is not served to everyone, and each person sees only their projects
// (`GET /v1/projects`). The lists are read again every few seconds while someone watches
// them, and at once when the window comes back into focus. Same surface as DirectoryModel.

import { SessionExpired } from './auth.js'

export const REST_DIRECTORY_LIMITS = Object.freeze({
  pollMs: 10_000,
  // Page size asked for (the API's maximum), and how many pages of each list are read.
  pageSize: 200,
  maxPages: 20,
  // Board lists read at the same time.
  concurrentProjects: 4
})

export class RestDirectory extends EventTarget {
  constructor (auth, { limits = REST_DIRECTORY_LIMITS } = {}) {
    super()
    this.auth = auth
    this.limits = limits
    this.loaded = false
    this.error = null
    this._projects = []
    this._boards = new Map() // project id -> [{ id, title, project }]
    this._titles = new Map() // board id -> title
    this._watchers = 0
    this._timer = 0
    this._loading = null
    this._onFocus = () => this.reload()
  }

  projectList () {
    return this._projects
  }

  boardList (projectId) {
    return this._boards.get(projectId) || []
  }

  boardTitle (boardId) {
    return this._titles.get(boardId)
  }

  /** Call `listener` after every change of the lists; returns the unsubscribe function. */
  subscribe (listener) {
    this.addEventListener('change', listener)
    if (this._watchers++ === 0) {
      window.addEventListener('focus', this._onFocus)
      this._poll()
    }
    return () => {
      this.removeEventListener('change', listener)
      if (--this._watchers === 0) {
        clearTimeout(this._timer)
        window.removeEventListener('focus', this._onFocus)
      }
    }
  }

  async createProject (name) {
    const project = await this.auth.request('/v1/projects', {
      method: 'POST',
      body: { name },
      headers: { 'Idempotency-Key': idempotencyKey() }
    })
    await this.reload()
    return project.id
  }

  async createBoard (title, projectId) {
    const board = await this.auth.request(`/v1/projects/${encodeURIComponent(projectId)}/boards`, {
      method: 'POST',
      body: { name: title },
      headers: { 'Idempotency-Key': idempotencyKey() }
    })
    this._titles.set(board.id, String(board.name ?? title))
    return board.id
  }

  /** The user's role on a board (`viewer`, `editor`...: the project's, or narrower), or null. */
  async roleOn (boardId, userId) {
    const body = await this.auth.request(`/v1/boards/${encodeURIComponent(boardId)}/members`)
    const found = (body?.items || []).find((m) => m.user === userId || m.id === userId)
    return typeof found?.role === 'string' ? found.role : null
  }

  /** Read both lists now (one read at a time; a call meanwhile waits for it). */
  reload () {
    if (!this._loading) this._loading = this._load().finally(() => { this._loading = null })
    return this._loading
  }

  async _poll () {
    clearTimeout(this._timer)
    await this.reload()
    if (this._watchers > 0) this._timer = setTimeout(() => this._poll(), this.limits.pollMs)
  }

  async _load () {
    try {
      const projects = (await this._pages('/v1/projects')).map((p) => ({
        id: String(p.id),
        name: String(p.name ?? p.id),
        role: typeof p.role === 'string' ? p.role : null
      }))
      const boards = new Map()
      const queue = [...projects]
      const worker = async () => {
        for (let project = queue.shift(); project; project = queue.shift()) {
          const items = await this._pages(`/v1/projects/${encodeURIComponent(project.id)}/boards`)
          boards.set(project.id, items.map((b) => ({ id: String(b.id), title: String(b.name ?? b.id), project: project.id })))
        }
      }
      await Promise.all(Array.from({ length: this.limits.concurrentProjects }, worker))
      const changed = !this.loaded || this.error !== null ||
        JSON.stringify([this._projects, [...this._boards]]) !== JSON.stringify([projects, [...boards]])
      this._projects = projects
      this._boards = boards
      for (const list of boards.values()) for (const b of list) this._titles.set(b.id, b.title)
      this.loaded = true
      this.error = null
      if (changed) this.dispatchEvent(new CustomEvent('change'))
    } catch (error) {
      if (error instanceof SessionExpired) return
      const message = `The list of projects could not be loaded (${error.message}).`
      if (message !== this.error) {
        this.error = message
        this.dispatchEvent(new CustomEvent('change'))
      }
    }
  }

  async _pages (path) {
    const items = []
    let cursor = null
    for (let page = 0; page < this.limits.maxPages; page++) {
      const query = new URLSearchParams({ limit: String(this.limits.pageSize) })
      if (cursor) query.set('cursor', cursor)
      const body = await this.auth.request(`${path}?${query}`)
      if (Array.isArray(body?.items)) items.push(...body.items)
      cursor = typeof body?.next_cursor === 'string' && body.next_cursor ? body.next_cursor : null
      if (!cursor) break
    }
    return items
  }
}

function idempotencyKey () {
  const bytes = crypto.getRandomValues(new Uint8Array(16))
  return 'web-' + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')
}
