// Who is using the app. On a server that asks for a log-in, the user is the account the
// server names (`/v1/me`, see auth.js): `accountSession`. On one that does not, a person picks
// a display name, kept in this browser: `loadSession`. Either way a colour is derived from the
// id, and everything else asks this module who the user is and what they may do, never the URL.

const STORAGE_KEY = 'boardcast.user'
const COLOURS = ['#1f6feb', '#b5179e', '#0a7d3b', '#b35900', '#6f42c1', '#c2185b', '#00768a']

function randomId (length = 12) {
  // crypto.randomUUID needs a secure context; a board served on a LAN address is not one.
  const alphabet = '0123456789abcdefghijklmnopqrstuvwxyz'
  const bytes = crypto.getRandomValues(new Uint8Array(length))
  return Array.from(bytes, (b) => alphabet[b % alphabet.length]).join('')
}

export { randomId }

function colourFor (id) {
  let hash = 0
  for (const ch of id) hash = (hash * 31 + ch.charCodeAt(0)) >>> 0
  return COLOURS[hash % COLOURS.length]
}

/**
 * The current session: `{ user: { id, name, colour }, role }`, role 'editor' or 'viewer'.
 * Until there is a log-in, a viewer is whoever opens a link with `?role=viewer`: the server
 * decides for itself (an `on_connect` extension makes such a session read-only), and the app
 * also learns it from the server's "permission denied" answer.
 */
export function loadSession () {
  let stored = null
  try {
    stored = JSON.parse(localStorage.getItem(STORAGE_KEY) || 'null')
  } catch {
    stored = null
  }
  if (!stored || typeof stored.id !== 'string') {
    stored = { id: randomId(), name: `Guest ${Math.floor(100 + Math.random() * 900)}` }
  }
  const params = new URLSearchParams(location.search)
  const name = params.get('name')
  if (name) stored.name = name.slice(0, 40)
  localStorage.setItem(STORAGE_KEY, JSON.stringify(stored))
  return {
    user: { id: stored.id, name: stored.name, colour: colourFor(stored.id) },
    role: params.get('role') === 'viewer' ? 'viewer' : 'editor',
    // Passed on every board socket, so a server-side extension can see them.
    socketParams () {
      const p = { ack: '1' }
      if (this.role === 'viewer') p.role = 'viewer'
      return p
    }
  }
}

export function renameUser (session, name) {
  const clean = name.trim().slice(0, 40)
  if (!clean) return
  session.user.name = clean
  localStorage.setItem(STORAGE_KEY, JSON.stringify({ id: session.user.id, name: clean }))
}

/**
 * The session of a logged-in account: identity from the server, nothing from this browser.
 * The role starts as editor; the server decides per board, and a viewer or commenter learns
 * it from the "permission denied" answer on the board's socket.
 */
export function accountSession (user) {
  return {
    account: true,
    user: { id: user.id, name: user.name, colour: colourFor(user.id) },
    role: 'editor',
    // Who we are travels in the access cookie of the WebSocket handshake.
    socketParams () {
      return { ack: '1' }
    }
  }
}
