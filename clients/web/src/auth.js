// Accounts on the server: whether it asks for a log-in, who we are (`/v1/me`), logging in and
// out, and keeping the short-lived access token fresh. The tokens live in the server's
// HttpOnly cookies (`boardcast_access` goes with every request and WebSocket handshake of this
// origin), so this module never stores a token: only when the access token expires, shared
// with the other tabs of this browser so that they do not all refresh at once.

/** The limits of this module, all in one place. */
export const AUTH_LIMITS = Object.freeze({
  // Refresh when this share of the access token's lifetime has gone by.
  refreshAtFraction: 0.75,
  // Never schedule a refresh sooner than this (a server answering expires_in: 0 must not spin).
  minRefreshDelayMs: 1_000,
  // A refresh that failed for a reason other than 401 (network, 5xx) is tried again this late.
  retryDelayMs: 10_000,
  // How long a request to the auth endpoints may take.
  requestTimeoutMs: 15_000,
  // How long a tab trusts another tab's refresh (it skips its own).
  sharedRefreshMs: 10_000
})

const SHARED_KEY = 'boardcast.auth'
const LOGGED_OUT_KEY = 'boardcast.auth.logout'

/** Thrown by `AuthClient.request` when the session is over and a log-in is needed. */
export class SessionExpired extends Error {
  constructor () {
    super('the session has ended: log in again')
    this.name = 'SessionExpired'
  }
}

/** A refusal from the server, with the RFC 9457 problem's short name (`invalid-credentials`...). */
export class ProblemError extends Error {
  constructor (status, problem, detail, retryAfter = null) {
    super(detail || `the server answered ${status}`)
    this.name = 'ProblemError'
    this.status = status
    this.problem = problem
    this.retryAfter = retryAfter
  }
}

async function timedFetch (path, options, timeoutMs) {
  const controller = new AbortController()
  const timer = setTimeout(() => controller.abort(), timeoutMs)
  try {
    return await fetch(path, { credentials: 'same-origin', ...options, signal: controller.signal })
  } finally {
    clearTimeout(timer)
  }
}

async function problemOf (response) {
  let body = null
  try {
    body = await response.json()
  } catch {
    body = null
  }
  const type = typeof body?.type === 'string' ? body.type : ''
  const problem = type.startsWith('urn:boardcast:problem:') ? type.slice('urn:boardcast:problem:'.length) : null
  const seconds = Number.parseInt(response.headers.get('Retry-After') || '', 10)
  const detail = typeof body?.detail === 'string' ? body.detail : typeof body?.title === 'string' ? body.title : ''
  return new ProblemError(response.status, problem, detail, Number.isFinite(seconds) ? seconds : null)
}

/**
 * Whether the server asks for a log-in: `{ auth: 'none'|'required', oidc, signIn }`, where
 * `signIn` is `{ name, url }` when people may sign in through the organisation's identity
 * provider (the server runs that flow; the page only goes to `url`). A server from before
 * accounts has no such endpoint (404): it is one where nobody logs in.
 */
export async function loadAuthConfig ({ timeoutMs = AUTH_LIMITS.requestTimeoutMs } = {}) {
  const response = await timedFetch('/v1/auth/config', { headers: { Accept: 'application/json' } }, timeoutMs)
  if (response.status === 404) return { auth: 'none', oidc: null, signIn: null }
  if (!response.ok) throw await problemOf(response)
  const config = await response.json()
  return {
    auth: config?.auth === 'required' ? 'required' : 'none',
    oidc: config?.oidc ?? null,
    signIn: signInOf(config?.sign_in)
  }
}

/** The server's sign-in entry, if it is one: a name, and a path of this site to go to. */
function signInOf (value) {
  const name = typeof value?.name === 'string' ? value.name.trim().slice(0, 100) : ''
  const url = typeof value?.url === 'string' ? value.url : ''
  // Only a path of this server: the page never sends anyone to a URL it was handed.
  if (!name || !/^\/v1\/auth\/oidc\/[a-z]+$/.test(url)) return null
  return { name, url }
}

/** Where a sign-in through the identity provider comes back to: this page, if it fits. */
export function signInHref (signIn, { maxReturnChars = 1024 } = {}) {
  const here = location.pathname + location.search + location.hash
  const back = here.length <= maxReturnChars && here.startsWith('/') && !here.startsWith('//') ? here : '/'
  return `${signIn.url}?${new URLSearchParams({ return_to: back })}`
}

function readShared () {
  try {
    const value = JSON.parse(localStorage.getItem(SHARED_KEY) || 'null')
    return value && Number.isFinite(value.expiresAt) && Number.isFinite(value.refreshedAt) ? value : null
  } catch {
    return null
  }
}

function writeShared (value) {
  try {
    if (value === null) localStorage.removeItem(SHARED_KEY)
    else localStorage.setItem(SHARED_KEY, JSON.stringify(value))
  } catch {
    // Storage may be full or off: each tab then refreshes on its own schedule.
  }
}

/** Run `task` while no other tab of this browser runs one under the same name. */
function exclusively (name, task) {
  // Web Locks exist only in secure contexts (https, or 127.0.0.1 and localhost).
  if (navigator.locks?.request) return navigator.locks.request(name, task)
  return task()
}

/**
 * A logged-in person's session. Events: `refreshed` (a new access token is in the cookie:
 * sockets refused with 4401 may connect again), `expired` (the session is over: show the
 * log-in page), `loggedout` (this or another tab logged out), `user` (who we are changed).
 */
export class AuthClient extends EventTarget {
  constructor ({ limits = AUTH_LIMITS, signIn = null } = {}) {
    super()
    this.limits = limits
    // Signing in through the identity provider, when the server offers it ({ name, url }).
    this.signIn = signIn
    this.user = null
    this._timer = 0
    this._refreshing = null
    this._accessToken = null
    // When this tab last received tokens (ms), to tell another tab's refresh from its own.
    this._ownRefreshAt = 0
    this._meExpiresAt = 0 // when the token of the cookie ends, as /v1/me said
    this._onStorage = (event) => {
      if (event.key === LOGGED_OUT_KEY && event.newValue) this._loggedOut()
      else if (event.key === SHARED_KEY) {
        const shared = readShared()
        if (shared) this._scheduleAt(shared.expiresAt, shared.refreshedAt)
      }
    }
    window.addEventListener('storage', this._onStorage)
    // Timers of hidden tabs are throttled: catch up when the person comes back.
    this._onVisible = () => {
      if (document.visibilityState === 'visible' && this.user && this._dueAt && Date.now() >= this._dueAt) this.refresh()
    }
    document.addEventListener('visibilitychange', this._onVisible)
  }

  /** Who we are, from the access cookie, refreshing it once if needed; null: log in first. */
  async resume () {
    let user = await this.me()
    if (user === null) {
      if (!(await this.refresh())) return null
      user = await this.me()
      return user
    }
    // Logged in from an earlier page: the server says how long the cookie's token lasts;
    // without that, a tab of this browser may have written it down.
    const shared = readShared()
    if (this._meExpiresAt) this._scheduleAt(this._meExpiresAt, this._meExpiresAt - this._meLifetime(shared))
    else if (shared && shared.expiresAt > Date.now()) this._scheduleAt(shared.expiresAt, shared.refreshedAt)
    else await this.refresh()
    return this.user
  }

  /** `GET /v1/me`: the user, or null without a valid access token. */
  async me () {
    const response = await timedFetch('/v1/me', { headers: this._headers() }, this.limits.requestTimeoutMs)
    if (response.status === 401) return null
    if (!response.ok) throw await problemOf(response)
    const body = await response.json()
    const left = Number(body?.expires_in)
    this._meExpiresAt = Number.isFinite(left) && left >= 0 ? Date.now() + left * 1000 : 0
    this._setUser(body)
    return this.user
  }

  /** How long an access token lives, as far as this browser knows (ms). */
  _meLifetime (shared) {
    if (shared && shared.expiresAt > shared.refreshedAt) return shared.expiresAt - shared.refreshedAt
    // Unknown: treat what is left as the whole life, so the refresh comes at 3/4 of it.
    return this._meExpiresAt - Date.now()
  }

  /**
   * `POST /v1/auth/login`. Resolves to the user; rejects with a ProblemError whose `problem` is
   * `mfa-required` (ask for the code, then call again with `totp`) or `invalid-credentials`.
   */
  async login ({ username, password, totp }) {
    const body = { username, password }
    if (totp) body.totp = totp
    const response = await timedFetch('/v1/auth/login', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify(body)
    }, this.limits.requestTimeoutMs)
    if (!response.ok) throw await problemOf(response)
    this._accepted(await response.json())
    try {
      localStorage.removeItem(LOGGED_OUT_KEY)
    } catch {}
    return this.user
  }

  /**
   * `POST /v1/auth/refresh` with the refresh cookie: a new access token (and refresh token).
   * One at a time in this tab, and in this browser where Web Locks exist. Resolves to false
   * when the session is over (and fires `expired`).
   */
  refresh () {
    if (!this._refreshing) {
      this._refreshing = this._refreshOnce().finally(() => { this._refreshing = null })
    }
    return this._refreshing
  }

  async _refreshOnce () {
    const asked = Date.now()
    return exclusively('boardcast.auth.refresh', async () => {
      // Another tab refreshed while we waited: the cookies it received are ours too. (The
      // refresh token rotates, so two tabs sending the same one would end the session.)
      const shared = readShared()
      const fresh = shared && shared.refreshedAt > this._ownRefreshAt &&
        shared.refreshedAt >= asked - this.limits.sharedRefreshMs && shared.expiresAt > Date.now()
      if (fresh) {
        this._accessToken = null
        this._scheduleAt(shared.expiresAt, shared.refreshedAt)
        this.dispatchEvent(new CustomEvent('refreshed'))
        return true
      }
      let response
      try {
        response = await timedFetch('/v1/auth/refresh', {
          method: 'POST',
          headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
          body: '{}'
        }, this.limits.requestTimeoutMs)
      } catch (error) {
        // Offline or the server is away: the session may well be fine; try again later.
        console.warn('Boardcast: token refresh failed, trying again later', error)
        this._scheduleIn(this.limits.retryDelayMs)
        return false
      }
      if (response.status === 401 || response.status === 403) {
        this._expired()
        return false
      }
      if (!response.ok) {
        this._scheduleIn(this.limits.retryDelayMs)
        return false
      }
      this._accepted(await response.json())
      this.dispatchEvent(new CustomEvent('refreshed'))
      return true
    })
  }

  /** `POST /v1/auth/logout`, then tell every tab. */
  async logout () {
    try {
      // The server ends the login of the access token: an expired one is refreshed first.
      await this.request('/v1/auth/logout', { method: 'POST' })
    } finally {
      writeShared(null)
      try {
        localStorage.setItem(LOGGED_OUT_KEY, String(Date.now()))
      } catch {}
      this._loggedOut()
    }
  }

  /**
   * A JSON request to the REST API as this user: on 401 the token is refreshed once and the
   * request sent again. Rejects with SessionExpired when that fails, ProblemError otherwise.
   */
  async request (path, { method = 'GET', body, headers = {}, timeoutMs = this.limits.requestTimeoutMs } = {}) {
    const send = () => timedFetch(path, {
      method,
      headers: {
        Accept: 'application/json',
        ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
        ...this._headers(),
        ...headers
      },
      body: body === undefined ? undefined : JSON.stringify(body)
    }, timeoutMs)
    let response = await send()
    if (response.status === 401) {
      const problem = await problemOf(response.clone())
      // A second factor asked for is not a session that ended.
      if (problem.problem === 'mfa-required') throw problem
      if (!(await this.refresh())) throw new SessionExpired()
      response = await send()
      if (response.status === 401) {
        this._expired()
        throw new SessionExpired()
      }
    }
    if (!response.ok) throw await problemOf(response)
    return response.status === 204 ? null : response.json()
  }

  destroy () {
    clearTimeout(this._timer)
    window.removeEventListener('storage', this._onStorage)
    document.removeEventListener('visibilitychange', this._onVisible)
  }

  _headers () {
    // The cookie is enough; the token from our own log-in or refresh also goes as a header
    // for servers that read only that on REST requests.
    return this._accessToken ? { Authorization: `Bearer ${this._accessToken}` } : {}
  }

  _accepted (answer) {
    this._accessToken = typeof answer?.access_token === 'string' ? answer.access_token : null
    if (answer?.user) this._setUser(answer.user)
    const seconds = Number(answer?.expires_in)
    const now = Date.now()
    const expiresAt = now + (Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : 0)
    this._ownRefreshAt = now
    writeShared({ refreshedAt: now, expiresAt })
    this._scheduleAt(expiresAt, now)
  }

  _setUser (body) {
    const user = {
      id: String(body?.id ?? ''),
      name: String(body?.name ?? body?.id ?? ''),
      admin: body?.admin === true,
      mfa: body?.mfa === true
    }
    const changed = !this.user || this.user.id !== user.id || this.user.name !== user.name
    this.user = user
    if (changed) this.dispatchEvent(new CustomEvent('user', { detail: user }))
  }

  _scheduleAt (expiresAt, issuedAt) {
    const lifetime = Math.max(0, expiresAt - issuedAt)
    const due = issuedAt + lifetime * this.limits.refreshAtFraction
    this._scheduleIn(due - Date.now())
  }

  _scheduleIn (delayMs) {
    clearTimeout(this._timer)
    const delay = Math.max(this.limits.minRefreshDelayMs, delayMs)
    this._dueAt = Date.now() + delay
    this._timer = setTimeout(() => this.refresh(), delay)
  }

  _expired () {
    clearTimeout(this._timer)
    this._accessToken = null
    this._dueAt = 0
    this.dispatchEvent(new CustomEvent('expired'))
  }

  _loggedOut () {
    clearTimeout(this._timer)
    this._accessToken = null
    this._dueAt = 0
    this.user = null
    this.dispatchEvent(new CustomEvent('loggedout'))
  }
}
