// The Boardcast board app: a router between the board list and one board, and the top bar
// (connection and saved state, presence, undo, who you are).

import './style.css'
import { BoardConnection } from './connection.js'
import { DirectoryModel, DIRECTORY_ROOM } from './directory.js'
import { loadSession, renameUser } from './session.js'
import { renderHome } from './home.js'
import { BoardView } from './board.js'
import { h } from './dom.js'

const session = loadSession()
const main = document.getElementById('main')
const statusEl = document.getElementById('status')
const crumbs = document.getElementById('crumbs')
const meButton = document.getElementById('me')
const notice = document.getElementById('notice')

// The directory of projects and boards stays connected while the app is open.
const directoryConnection = new BoardConnection(DIRECTORY_ROOM, { params: session.socketParams() })
const directory = new DirectoryModel(directoryConnection.doc)

let current = null // { connection, view } of the open board
let teardown = null

function showStatus () {
  const state = (current ? current.connection : directoryConnection).state
  const connection = {
    connected: 'Connected',
    connecting: 'Connecting…',
    offline: 'Offline'
  }[state.status]
  const saved = {
    saved: 'All changes saved',
    saving: 'Saving…',
    unsaved: 'Changes not saved yet: they are kept here and sync when you reconnect'
  }[state.saved]
  // A viewer's edits are never stored, so there is nothing to say about saving.
  const viewOnly = session.role === 'viewer' || state.denied !== null
  statusEl.dataset.connection = state.status
  statusEl.dataset.saved = state.saved
  statusEl.replaceChildren(
    h('span', { class: `dot dot-${state.status}`, 'aria-hidden': 'true' }),
    h('span', { class: 'connection' }, connection),
    h('span', { class: 'saved' }, viewOnly ? 'View only' : state.synced || state.saved !== 'saved' ? saved : '')
  )
}
directoryConnection.addEventListener('change', showStatus)

function showMe () {
  meButton.replaceChildren(
    h('span', { class: 'avatar', style: `background:${session.user.colour}`, 'aria-hidden': 'true' }, session.user.name.slice(0, 1).toUpperCase()),
    h('span', {}, session.user.name + (session.role === 'viewer' ? ' (viewer)' : '')),
    h('span', { class: 'visually-hidden' }, ': change your display name')
  )
}
meButton.addEventListener('click', () => {
  const name = prompt('Your display name', session.user.name)
  if (name === null) return
  renameUser(session, name)
  showMe()
  current?.view.updatePresence()
})

function showNotice (message) {
  notice.hidden = !message
  notice.textContent = message || ''
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
  teardown = renderHome(main, { directory, connection: directoryConnection, session })
}

function openBoard (boardId) {
  const connection = new BoardConnection(boardId, { params: session.socketParams() })
  const view = new BoardView(main, {
    boardId,
    connection,
    directory,
    session,
    onTitle: (title) => {
      document.title = `${title} · Boardcast`
      crumbs.replaceChildren(h('ol', {}, h('li', {}, h('a', { href: '#/' }, 'Boards')), h('li', { class: 'crumb-next' }, h('span', { 'aria-current': 'page' }, title))))
    },
    onNotice: showNotice
  })
  connection.addEventListener('change', showStatus)
  current = { connection, view }
  teardown = () => {
    view.destroy()
    connection.destroy()
    current = null
  }
}

window.addEventListener('hashchange', route)
showMe()
route()

// For tests and the bench: the live documents of the page.
window.boardcast = {
  get board () { return current?.view.model },
  get view () { return current?.view },
  get connection () { return current?.connection },
  directory,
  session
}
