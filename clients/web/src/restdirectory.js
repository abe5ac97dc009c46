// Creating projects and boards through the REST API. The lists themselves arrive live on a
// socket (directory.js): what is created here comes back there. `request(path, options)` is
// AuthClient.request where people log in (auth.js), else jsonRequest below.

export class RestProjects {
  constructor (request, { withAccounts = false } = {}) {
    this.request = request
    this.withAccounts = withAccounts
  }

  /** A new project (the caller becomes its owner); its id. */
  async createProject (name) {
    const project = await this.request('/v1/projects', {
      method: 'POST',
      body: { name },
      headers: { 'Idempotency-Key': idempotencyKey() }
    })
    return String(project.id)
  }

  /** A new board in the project, with the usual columns; `{ id, name }`. */
  async createBoard (title, projectId) {
    const board = await this.request(`/v1/projects/${encodeURIComponent(projectId)}/boards`, {
      method: 'POST',
      body: { name: title },
      headers: { 'Idempotency-Key': idempotencyKey() }
    })
    return { id: String(board.id), name: String(board.name ?? title) }
  }

  /** The user's role on a board (`viewer`, `editor`...: the project's, or narrower), or null. */
  async roleOn (boardId, userId) {
    const body = await this.request(`/v1/boards/${encodeURIComponent(boardId)}/members`)
    const found = (body?.items || []).find((m) => m.user === userId || m.id === userId)
    return typeof found?.role === 'string' ? found.role : null
  }
}

/** A JSON request to the REST API of a server without log-ins; rejects on an error status. */
export async function jsonRequest (path, { method = 'GET', body, headers = {} } = {}) {
  const response = await fetch(path, {
    method,
    headers: {
      Accept: 'application/json',
      ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
      ...headers
    },
    body: body === undefined ? undefined : JSON.stringify(body)
  })
  const text = await response.text()
  const answer = text ? JSON.parse(text) : null
  if (!response.ok) throw new Error(answer?.detail || answer?.title || `HTTP ${response.status}`)
  return answer
}

function idempotencyKey () {
  const bytes = crypto.getRandomValues(new Uint8Array(16))
  return 'web-' + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')
}
