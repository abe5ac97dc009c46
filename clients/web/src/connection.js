// One board document on its socket: the stock y-websocket provider, plus what Boardcast adds
// to the protocol: the "persisted" acknowledgement (message 100, asked for with ?ack=1) that
// tells which of our updates are durable, and the "permission denied" answer to a viewer.
// A socket the server closes with a 44xx code is not reconnected by the provider: the
// connection says `closed` (4401: who are you, 4403: not allowed here) and whoever knows what
// to do about it calls `reconnect()`.

import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import * as decoding from 'lib0/decoding'
import * as encoding from 'lib0/encoding'
import * as syncProtocol from 'y-protocols/sync'

const MESSAGE_AUTH = 2
const MESSAGE_PERSISTED = 100
// How long to wait for the server's answer to our sync step 1 before asking again.
const SYNC_RETRY_MS = 2000
// Close codes that mean "reconnect and resync" (slow consumer, out of sync), which the stock
// provider takes as final like every 44xx code; and the backoff of those reconnects.
const RESYNC_CODES = new Set([4408, 4409])
const RESYNC_BACKOFF_MS = { first: 500, max: 10_000 }

export function socketBase () {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:'
  return `${scheme}//${location.host}/ws`
}

/**
 * A document kept in sync with one board. Listeners get `change` after any change of
 * `state` = { status: 'connecting'|'connected'|'offline'|'closed', saved: 'saved'|'saving'|
 * 'unsaved', synced, denied, closed: { code, reason } | null }; and `closed` when the server
 * closed the socket for good.
 */
export class BoardConnection extends EventTarget {
  constructor (room, { params = {}, doc = new Y.Doc() } = {}) {
    super()
    this.room = room
    this.doc = doc
    this.state = { status: 'connecting', saved: 'saved', synced: false, denied: null, closed: null }
    // Update messages (sync step 2 and update) sent on the current socket, and how many of
    // them the server said are durable. Both restart with every socket.
    this._sent = 0
    this._acked = 0
    // Edits made while no socket was open: they travel in the next step 2.
    this._offlineEdits = false
    const connection = this
    class CountingSocket extends WebSocket {
      constructor (...args) {
        super(...args)
        connection._socket = this
        connection._sent = 0
        connection._acked = 0
      }

      send (data) {
        const bytes = data instanceof Uint8Array ? data : new Uint8Array(data)
        // varUint 0 (sync), then 1 (step 2) or 2 (update): one byte each.
        if (this === connection._socket && bytes[0] === 0 && (bytes[1] === 1 || bytes[1] === 2)) {
          connection._sent++
        }
        super.send(data)
      }
    }
    this.provider = new WebsocketProvider(socketBase(), room, doc, {
      params,
      WebSocketPolyfill: CountingSocket,
      disableBc: true,
      connect: false
    })
    this.provider.messageHandlers[MESSAGE_PERSISTED] = (_encoder, decoder) => {
      this._acked = Math.max(this._acked, decoding.readVarUint(decoder))
      this._refresh()
    }
    this.provider.messageHandlers[MESSAGE_AUTH] = (_encoder, decoder) => {
      // y-protocols auth: 0 = permission denied, then the reason.
      if (decoding.readVarUint(decoder) === 0) {
        this.state.denied = decoding.readVarString(decoder)
        this._refresh()
        this.dispatchEvent(new CustomEvent('denied', { detail: this.state.denied }))
      }
    }
    this.provider.on('status', ({ status }) => {
      if (status === 'connected') {
        // When our last socket closed, the server marked our presence removed with the next
        // clock, and ignores the same state sent again at that clock: announce it with a
        // higher one, or the others would not see us until the 15 s renewal.
        const local = this.provider.awareness.getLocalState()
        if (local !== null) {
          this.provider.awareness.setLocalState({ ...local })
          this.provider.awareness.setLocalState({ ...local })
        }
      }
      if (status === 'connected') this.state.status = 'connected'
      else if (status === 'connecting') this.state.status = this._wantOffline ? 'offline' : 'connecting'
      else this.state.status = this._wantOffline ? 'offline' : 'connecting'
      if (status !== 'connected') this.state.synced = false
      this._refresh()
    })
    this.provider.on('status', ({ status }) => {
      clearTimeout(this._syncTimer)
      if (status === 'connected') this._syncTimer = setTimeout(() => this._askAgain(), SYNC_RETRY_MS)
    })
    this._resyncs = 0
    this.provider.on('closed', ({ code, reason }) => {
      if (RESYNC_CODES.has(code)) {
        const delay = Math.min(RESYNC_BACKOFF_MS.first * 2 ** this._resyncs++, RESYNC_BACKOFF_MS.max)
        clearTimeout(this._resyncTimer)
        this._resyncTimer = setTimeout(() => { if (!this._wantOffline) this.provider.connect() }, delay)
        return
      }
      this.state.closed = { code, reason }
      this.state.status = 'closed'
      this._refresh()
      this.dispatchEvent(new CustomEvent('closed', { detail: this.state.closed }))
    })
    this.provider.on('sync', (synced) => {
      if (synced) this._resyncs = 0
      this.state.synced = synced
      this._refresh()
    })
    doc.on('update', (_update, origin) => {
      if (origin === this.provider) return
      if (!this.provider.wsconnected) this._offlineEdits = true
      this._refresh()
    })
    this._online = () => this.goOnline()
    this._offline = () => this.goOffline()
    window.addEventListener('online', this._online)
    window.addEventListener('offline', this._offline)
    if (navigator.onLine) this.provider.connect()
    else this.goOffline()
  }

  /** Connected but no answer to our sync step 1 yet: ask again (any time is allowed). */
  _askAgain () {
    const ws = this.provider.ws
    if (this.state.synced || !ws || ws.readyState !== WebSocket.OPEN) return
    console.warn(`Boardcast: no sync answer on ${this.room} after ${SYNC_RETRY_MS} ms; asking again`)
    const encoder = encoding.createEncoder()
    encoding.writeVarUint(encoder, 0)
    syncProtocol.writeSyncStep1(encoder, this.doc)
    ws.send(encoding.toUint8Array(encoder))
    this._syncTimer = setTimeout(() => this._askAgain(), SYNC_RETRY_MS)
  }

  get awareness () {
    return this.provider.awareness
  }

  /** Stop talking to the server (the browser went offline); edits stay in the document. */
  goOffline () {
    this._wantOffline = true
    this.provider.disconnect()
    this.state.status = 'offline'
    this._refresh()
  }

  /** Connect again after the server closed the socket (for instance with a fresh token). */
  reconnect () {
    this.state.closed = null
    if (!this._wantOffline) this.goOnline()
  }

  goOnline () {
    this._wantOffline = false
    this.state.closed = null
    this.state.status = 'connecting'
    this.provider.connect()
    this._refresh()
  }

  _refresh () {
    const connected = this.provider.wsconnected && this.state.synced
    let saved
    if (!connected) {
      saved = this._offlineEdits || this._sent > this._acked ? 'unsaved' : 'saved'
      if (this._sent > this._acked) this._offlineEdits = true
    } else if (this._sent > this._acked) {
      saved = 'saving'
    } else if (this._offlineEdits) {
      // Connected and everything sent is durable: once the step 2 that carried the offline
      // edits is among them, they are saved too.
      if (this._acked > 0) this._offlineEdits = false
      saved = this._offlineEdits ? 'saving' : 'saved'
    } else {
      saved = 'saved'
    }
    this.state.saved = saved
    this.dispatchEvent(new CustomEvent('change', { detail: this.state }))
  }

  destroy () {
    clearTimeout(this._syncTimer)
    clearTimeout(this._resyncTimer)
    window.removeEventListener('online', this._online)
    window.removeEventListener('offline', this._offline)
    this.provider.destroy()
    this.doc.destroy()
  }
}
