// The Boardcast board app: asks the server whether people log in (auth.js, login.js), then
// routes between the board list and one board, and keeps the top bar (connection and saved
// state, presence, undo, who you are).

import './style.css'
import { BoardConnection } from './connection.js'
import { LiveDirectory, DIRECTORY_ROOM, listRoom } from './directory.js'
import { RestProjects, jsonRequest } from './restdirectory.js'
import { accountSession, loadSession, renameUser } from './session.js'
import { AuthClient, loadAuthConfig } from './auth.js'
import { showLogin } from './login.js'
import { renderHome } from './home.js'
import { BoardView } from './board.js'
import { NotificationBell } from './notifications.js'
import { h } from './dom.js'

// Sockets closed "who are you?" (4401) in a row, each after a fresh token, before the page
// stops trying and asks to log in again.
const MAX_UNAUTHORISED_CLOSES = 3
// Project roles that may read a board but not edit it.
const READ_ONLY_ROLES = new Set(['viewer', 'commenter'])

const main = document.getElementById('main')
const statusEl = document.getElementById('status')
const crumbs = document.getElementById('crumbs')
const meButton = document.getElementById('me')
const account = document.getElementById('account')
const notice = document.getElementById('notice')
const tools = document.querySelector('.topbar-tools')

let session = null
let auth = null // AuthClient where the server asks for a log-in
let directory = null // the live lists of projects and boards (directory.js)
let directoryConnection = null // its connection, shown in the status bar where nobody logs in
let current = null // { connection, view } of the open board
let teardown = null

function showStatus () {
  const connection = current ? current.connection : directoryConnection
  if (!connection) {
    statusEl.replaceChildren()
    return
  }
  const state = connection.state
  const words = {
    connected: 'Connected',
    connecting: 'Connecting…',
    offline: 'Offline',
    closed: 'Not connected'
  }[state.status]
  const saved = {
    saved: 'All changes saved',
    saving: 'Saving…',
    unsaved: 'Changes not saved yet: they are kept here and sync when you reconnect'
  }[state.saved]
  // A viewer's edits are never stored, so there is nothing to say about saving.
  const viewOnly = session.role === 'viewer' || state.denied !== null || Boolean(current?.view.readOnly)
  statusEl.dataset.connection = state.status
  statusEl.dataset.saved = state.saved
  statusEl.replaceChildren(
    h('span', { class: `dot dot-${state.status}`, 'aria-hidden': 'true' }),
    h('span', { class: 'connection' }, words),
    h('span', { class: 'saved' }, viewOnly ? 'View only' : state.synced || state.saved !== 'saved' ? saved : '')
  )
}

function avatar () {
  return h('span', { class: 'avatar', style: `background:${session.user.colour}`, 'aria-hidden': 'true' }, session.user.name.slice(0, 1).toUpperCase())
}

function showMe () {
  meButton.replaceChildren(
    avatar(),
    h('span', {}, session.user.name + (session.role === 'viewer' ? ' (viewer)' : '')),
    h('span', { class: 'visually-hidden' }, ': change your display name')
  )
}
meButton.addEventListener('click', () => {
  if (session.account) return
  const name = prompt('Your display name', session.user.name)
  if (name === null) return
  renameUser(session, name)
  showMe()
  current?.view.updatePresence()
})

/** With accounts: the name comes from the server and cannot be edited here; a log-out. */
function showAccount () {
  meButton.hidden = true
  account.hidden = false
  account.replaceChildren(
    h('span', { class: 'me' }, avatar(), h('span', { class: 'account-name' }, session.user.name)),
    h('button', {
      type: 'button',
      class: 'logout',
      onclick: (event) => {
        event.currentTarget.disabled = true
        auth.logout().catch((error) => console.warn('Boardcast: log-out request failed', error))
      }
    }, 'Log out'))
}

function showNotice (message) {
  notice.hidden = !message
  notice.textContent = message || ''
}

/**
 * The log-in page in place of the app. An open board stays as it is meanwhile: its elements
 * are kept aside and come back, and its document keeps every edit made while logged out.
 */
async function askToLogIn (reason) {
  let kept = null
  if (current) {
    current.view.dialog.close()
    kept = [...main.childNodes]
  } else {
    teardown?.()
    teardown = null
  }
  tools.hidden = true
  crumbs.hidden = true
  const title = document.title
  document.title = 'Log in · Boardcast'
  const user = await showLogin(main, auth, { reason })
  tools.hidden = false
  crumbs.hidden = false
  document.title = title
  if (kept) main.replaceChildren(...kept)
  else if (session) route()
  return user
}

function showRefused (code) {
  teardown?.()
  teardown = null
  document.title = 'No access · Boardcast'
  document.getElementById('presence').hidden = true
  document.getElementById('undo-tools').hidden = true
  const text = code === 4403
    ? 'You do not have access to this board.'
    : 'The server does not know who you are, so it did not open this board.'
  main.replaceChildren(h('div', { class: 'refused' },
    h('h1', {}, code === 4403 ? 'You do not have access to this board' : 'Not connected'),
    h('p', {}, text),
    h('p', {}, h('a', { href: '#/' }, 'Back to the list of boards'))))
  main.focus({ preventScroll: true })
  showStatus()
}

function route () {
  teardown?.()
  teardown = null
  showNotice(null)
  const match = location.hash.match(/^#\/b\/([A-Za-z0-9._~-]{1,200})$/)
  if (match) openBoard(decodeURIComponent(match[1]))
  else openHome()
  showStatus()
}

function openHome () {
  document.title = 'Boards · Boardcast'
  crumbs.replaceChildren()
  document.getElementById('presence').hidden = true
  document.getElementById('undo-tools').hidden = true
  teardown = renderHome(main, { directory, session, onNotice: showNotice })
}

function openBoard (boardId) {
  const connection = new BoardConnection(boardId, { params: session.socketParams() })
  const view = new BoardView(main, {
    boardId,
    connection,
    directory,
    session,
    auth, // with accounts, comments are posted over REST (a commenter's socket is read-only)
    onTitle: (title) => {
      document.title = `${title} · Boardcast`
      crumbs.replaceChildren(h('ol', {}, h('li', {}, h('a', { href: '#/' }, 'Boards')), h('li', { class: 'crumb-next' }, h('span', { 'aria-current': 'page' }, title))))
    },
    onNotice: showNotice
  })
  connection.addEventListener('change', showStatus)
  // Refused sockets: 4401 wants a fresh access token (then connect again), 4403 is final.
  connection.unauthorised = 0
  let roleAsked = false
  connection.provider.on('sync', (synced) => {
    if (!synced) return
    connection.unauthorised = 0
    if (!roleAsked && directory.roleOn) {
      roleAsked = true
      showRole(view)
    }
  })
  const onClosed = ({ detail }) => {
    if (detail.code === 4401 && auth) {
      if (++connection.unauthorised > MAX_UNAUTHORISED_CLOSES) expired()
      else auth.refresh()
    } else if (detail.code === 4401 || detail.code === 4403) {
      showRefused(detail.code)
    } else {
      // The board stays as it is (edits kept in the page); the server says why it stopped.
      const why = detail.code === 4430
        ? 'you have the most boards open that the server allows: close some tabs'
        : detail.reason || `code ${detail.code}`
      showNotice(`The server closed the connection to this board (${why}). Reload the page to connect again.`)
    }
  }
  connection.addEventListener('closed', onClosed)
  current = { connection, view }
  teardown = () => {
    connection.removeEventListener('closed', onClosed)
    view.destroy()
    connection.destroy()
    current = null
  }
}

/**
 * With accounts: a viewer or commenter of the board gets the view-only board at once,
 * instead of when the server first refuses an edit. (The server decides either way.)
 */
function showRole (view) {
  directory.roleOn(view.boardId, session.user.id).then((role) => {
    if (current?.view !== view || !READ_ONLY_ROLES.has(role)) return
    view.setReadOnly(true, { canComment: role === 'commenter' })
    showStatus()
  }, (error) => console.warn('Boardcast: could not read your role on the board', error))
}

/** A new access token: sockets the server refused for want of one connect again. */
function reconnectRefused () {
  const connection = current?.connection
  if (connection && connection.state.closed?.code === 4401) connection.reconnect()
  directory?.reload()
}

let askingAgain = false
/** The session ended (its refresh token was refused): log in again, then carry on. */
async function expired () {
  if (askingAgain) return
  askingAgain = true
  const before = session.user.id
  const user = await askToLogIn('Your session has ended. Log in again to carry on; your open board is kept.')
  askingAgain = false
  if (user.id !== before) {
    // Someone else logged in: nothing of the previous person's page may stay.
    location.reload()
    return
  }
  if (current) current.connection.unauthorised = 0
  reconnectRefused()
  directory.reload?.()
}

function loggedOut () {
  // Start again from nothing: no board, document or name of this person stays in the page.
  history.replaceState(null, '', location.pathname)
  location.reload()
}

function fatal (message) {
  tools.hidden = true
  main.replaceChildren(h('div', { class: 'refused' },
    h('h1', {}, 'Boardcast is not available'),
    h('p', {}, message),
    h('p', {}, h('button', { type: 'button', onclick: () => location.reload() }, 'Try again'))))
}

async function start () {
  let config
  try {
    config = await loadAuthConfig()
  } catch (error) {
    console.warn('Boardcast: could not read the server settings', error)
    fatal('The server did not answer. Check your connection, then try again.')
    return
  }
  if (config.auth === 'required') {
    auth = new AuthClient({ signIn: config.signIn })
    let user
    try {
      user = await auth.resume()
    } catch (error) {
      console.warn('Boardcast: could not ask the server who we are', error)
      fatal('The server did not say who you are. Try again in a moment.')
      return
    }
    if (!user) user = await askToLogIn(null)
    session = accountSession(user)
    // Administrators see every project (the directory); everyone else their own list.
    directory = new LiveDirectory({
      room: user.admin ? DIRECTORY_ROOM : listRoom(user.id),
      params: session.socketParams(),
      rest: new RestProjects((path, options) => auth.request(path, options), { withAccounts: true })
    })
    directory.connection.addEventListener('closed', ({ detail }) => {
      if (detail.code === 4401) auth.refresh()
    })
    auth.addEventListener('refreshed', reconnectRefused)
    auth.addEventListener('expired', expired)
    auth.addEventListener('loggedout', loggedOut)
    showAccount()
    // The bell: your notifications, live (notifications.js).
    const bell = new NotificationBell({ request: (path, options) => auth.request(path, options) })
    tools.insertBefore(bell.element, account)
    bell.start()
    auth.addEventListener('loggedout', () => bell.stop())
  } else {
    session = loadSession()
    // The directory of projects and boards stays connected while the app is open.
    directory = new LiveDirectory({ room: DIRECTORY_ROOM, params: session.socketParams(), rest: new RestProjects(jsonRequest) })
    directoryConnection = directory.connection
    directoryConnection.addEventListener('change', showStatus)
    showMe()
  }
  window.addEventListener('hashchange', route)
  route()
}

// For tests and the bench: the live documents of the page.
window.boardcast = {
  get board () { return current?.view.model },
  get view () { return current?.view },
  get connection () { return current?.connection },
  get directory () { return directory },
  get session () { return session },
  get auth () { return auth }
}

start()
