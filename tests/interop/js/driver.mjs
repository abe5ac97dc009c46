// A stock Yjs client (yjs + y-websocket over `ws`) steered by newline-delimited JSON on stdin.
//
// Each input line is {"id": <any>, "cmd": "<name>", ...arguments}. Each command gets exactly one
// output line {"id": <same>, "ok": true, "result": ...} or {"id": <same>, "ok": false, "error": "..."}.
// Commands run as they arrive; slow ones (waits) answer later, so answers may come out of order.
// Nothing else is written to stdout: library logging is sent to stderr.

import * as readline from 'node:readline'
import { isDeepStrictEqual } from 'node:util'
import WebSocket from 'ws'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'

// y-websocket and yjs log with console.log/warn; stdout belongs to the answers.
console.log = (...args) => console.error(...args)
console.info = (...args) => console.error(...args)

const ROOT_MAPS = ['tasks', 'columns', 'meta']

/** @type {Y.Doc} */
let doc = new Y.Doc()
/** @type {WebsocketProvider | null} */
let provider = null
/** @type {number | null} */
let lastCloseCode = null
let updatesReceived = 0

class CommandError extends Error {}

const requireProvider = () => {
  if (provider === null) throw new CommandError('not connected: send "connect" first')
  return provider
}

/** Resolves when `check()` is true, re-checking on every event from `subscribe`; rejects on timeout. */
const waitFor = (check, subscribe, timeoutMs, what) => new Promise((resolve, reject) => {
  if (check()) { resolve(true); return }
  let unsubscribe = () => {}
  const timer = setTimeout(() => {
    unsubscribe()
    reject(new CommandError(`timed out after ${timeoutMs} ms waiting for ${what}`))
  }, timeoutMs)
  unsubscribe = subscribe(() => {
    if (check()) {
      clearTimeout(timer)
      unsubscribe()
      resolve(true)
    }
  })
})

const onDocUpdate = (listener) => {
  doc.on('update', listener)
  return () => doc.off('update', listener)
}

/** Gives a root type its concrete class: a type first seen in a remote update is untyped. */
const concreteRoot = (name, kind) => {
  if (kind === 'map') return doc.getMap(name)
  if (kind === 'text') return doc.getText(name)
  if (kind === 'array') return doc.getArray(name)
  if (kind === 'xml') return doc.getXmlFragment(name)
  const type = doc.share.get(name)
  if (type === undefined) return null
  if (type instanceof Y.Map || type instanceof Y.Text || type instanceof Y.Array ||
      type instanceof Y.XmlFragment) return type
  // Untyped root: map entries live in _map, sequence items hang off _start.
  if (type._start === null) return doc.getMap(name)
  const content = type._start.content
  if (content instanceof Y.ContentString || content instanceof Y.ContentFormat ||
      content instanceof Y.ContentEmbed) return doc.getText(name)
  return doc.getArray(name)
}

/** The document as JSON: the board's root maps, plus every other root type it holds. */
const docJson = (types = {}) => {
  const out = {}
  for (const name of ROOT_MAPS) out[name] = doc.getMap(name).toJSON()
  for (const [name, kind] of Object.entries(types)) out[name] = concreteRoot(name, kind).toJSON()
  for (const name of Array.from(doc.share.keys())) {
    if (name in out) continue
    const type = concreteRoot(name)
    if (type !== null) out[name] = type.toJSON()
  }
  return out
}

const valueAt = (value, path) => {
  let current = value
  for (const step of path) {
    if (current === null || typeof current !== 'object' || !(step in current)) return undefined
    current = current[step]
  }
  return current
}

/** Walks [root, key, key...] through nested Y.Maps/Y.Arrays; the root is a map unless only one step. */
const typeAt = (path, { createText = false } = {}) => {
  if (!Array.isArray(path) || path.length === 0) throw new CommandError('path must be a non-empty list')
  if (path.length === 1) return doc.getText(String(path[0]))
  let current = doc.getMap(String(path[0]))
  for (let i = 1; i < path.length; i++) {
    const step = path[i]
    const last = i === path.length - 1
    let next
    if (current instanceof Y.Map) {
      next = current.get(String(step))
      if (next === undefined && last && createText) {
        next = new Y.Text()
        current.set(String(step), next)
      }
    } else if (current instanceof Y.Array) {
      next = current.get(Number(step))
    }
    if (!(next instanceof Y.AbstractType)) {
      throw new CommandError(`no shared type at ${JSON.stringify(path.slice(0, i + 1))}`)
    }
    current = next
  }
  return current
}

/** Sets task fields as the board schema stores them: description a Y.Text, assignees/labels Y.Arrays. */
const writeTaskFields = (task, fields) => {
  for (const [key, value] of Object.entries(fields)) {
    if (key === 'description' && typeof value === 'string') {
      const text = new Y.Text()
      text.insert(0, value)
      task.set(key, text)
    } else if ((key === 'assignees' || key === 'labels') && Array.isArray(value)) {
      const list = new Y.Array()
      list.push(value)
      task.set(key, list)
    } else {
      task.set(key, value)
    }
  }
}

const toBase64 = (bytes) => Buffer.from(bytes).toString('base64')
const fromBase64 = (text) => new Uint8Array(Buffer.from(text, 'base64'))

const commands = {
  connect ({ url, room, params = {}, max_backoff_ms: maxBackoffTime = 2500, awareness }) {
    if (provider !== null) throw new CommandError('already connected; use reconnect')
    if (typeof url !== 'string' || typeof room !== 'string') {
      throw new CommandError('connect needs "url" and "room" strings')
    }
    provider = new WebsocketProvider(url, room, doc, {
      WebSocketPolyfill: WebSocket,
      params,
      maxBackoffTime,
      // Every driver is its own process; cross-tab messaging would only hide server behaviour.
      disableBc: true
    })
    if (awareness !== undefined) provider.awareness.setLocalState(awareness)
    // Updates that arrived from the server (a change made as one transaction is one).
    doc.on('update', (_update, origin) => {
      if (origin === provider) updatesReceived += 1
    })
    // The close code the server gave last (extensions refuse with named codes).
    provider.on('connection-close', (event) => {
      lastCloseCode = event && typeof event.code === 'number' ? event.code : null
    })
    return { client_id: doc.clientID, socket_url: provider.url }
  },

  async wait_synced ({ timeout_ms: timeoutMs = 10000 }) {
    const p = requireProvider()
    await waitFor(() => p.synced, (listener) => {
      p.on('sync', listener)
      return () => p.off('sync', listener)
    }, timeoutMs, 'sync with the server')
    return true
  },

  status () {
    return {
      client_id: doc.clientID,
      connected: provider !== null && provider.wsconnected,
      synced: provider !== null && provider.synced,
      should_connect: provider !== null && provider.shouldConnect,
      last_close_code: lastCloseCode,
      updates_received: updatesReceived
    }
  },

  set_map ({ map, key, value }) {
    doc.getMap(map).set(key, value)
    return true
  },

  delete_key ({ map, key }) {
    doc.getMap(map).delete(key)
    return true
  },

  create_task ({ task_id: taskId, fields = {} }) {
    if (typeof taskId !== 'string') throw new CommandError('create_task needs a "task_id" string')
    doc.transact(() => {
      const task = new Y.Map()
      doc.getMap('tasks').set(taskId, task)
      writeTaskFields(task, fields)
    })
    return true
  },

  create_column ({ column_id: columnId, fields = {} }) {
    if (typeof columnId !== 'string') throw new CommandError('create_column needs a "column_id" string')
    doc.transact(() => {
      const column = new Y.Map()
      doc.getMap('columns').set(columnId, column)
      for (const [key, value] of Object.entries(fields)) column.set(key, value)
    })
    return true
  },

  update_task ({ task_id: taskId, fields = {} }) {
    const task = doc.getMap('tasks').get(taskId)
    if (!(task instanceof Y.Map)) throw new CommandError(`no task ${JSON.stringify(taskId)}`)
    doc.transact(() => writeTaskFields(task, fields))
    return true
  },

  insert_text ({ path, text, index, repeat = 1 }) {
    const target = typeAt(path, { createText: true })
    if (!(target instanceof Y.Text)) throw new CommandError(`not a text at ${JSON.stringify(path)}`)
    const body = repeat === 1 ? text : text.repeat(repeat)
    target.insert(index === undefined || index === null ? target.length : index, body)
    return { length: target.length }
  },

  push_array ({ path, values }) {
    const target = typeAt(path)
    if (!(target instanceof Y.Array)) throw new CommandError(`not an array at ${JSON.stringify(path)}`)
    target.push(values)
    return { length: target.length }
  },

  get_json ({ path = [], types = {} }) {
    const value = valueAt(docJson(types), path)
    return value === undefined ? null : value
  },

  async wait_until ({ path = [], equals, types = {}, timeout_ms: timeoutMs = 10000 }) {
    const check = () => isDeepStrictEqual(valueAt(docJson(types), path), equals)
    await waitFor(check, onDocUpdate, timeoutMs, `${JSON.stringify(path)} == ${JSON.stringify(equals)}`)
    return true
  },

  set_awareness ({ state }) {
    requireProvider().awareness.setLocalState(state)
    return true
  },

  get_awareness () {
    const p = requireProvider()
    const others = {}
    for (const [clientId, state] of p.awareness.getStates()) {
      if (clientId !== doc.clientID) others[clientId] = state
    }
    return others
  },

  disconnect () {
    requireProvider().disconnect()
    return true
  },

  reconnect () {
    requireProvider().connect()
    return true
  },

  // Drops the TCP connection with no WebSocket close handshake, as a crashed tab or lost network would.
  async cut ({ reconnect = false, reset = false, timeout_ms: timeoutMs = 5000 }) {
    const p = requireProvider()
    const ws = p.ws
    if (ws === null || ws._socket === null || ws._socket === undefined) {
      throw new CommandError('no open socket to cut')
    }
    // Left true, the provider would reconnect on its own about 200 ms later.
    p.shouldConnect = reconnect
    // 'connection-close' fires before the provider forgets the socket, so note it in a flag.
    let seen = false
    const closed = waitFor(() => seen, (listener) => {
      const onClose = () => { seen = true; listener() }
      p.on('connection-close', onClose)
      return () => p.off('connection-close', onClose)
    }, timeoutMs, 'the cut socket to close')
    if (reset) ws._socket.resetAndDestroy()
    else ws._socket.destroy()
    await closed
    return true
  },

  state_vector () {
    return toBase64(Y.encodeStateVector(doc))
  },

  encode_state ({ state_vector: stateVector }) {
    const vector = stateVector ? fromBase64(stateVector) : undefined
    return toBase64(Y.encodeStateAsUpdate(doc, vector))
  },

  apply_update ({ update }) {
    Y.applyUpdate(doc, fromBase64(update))
    return true
  },

  reset_doc () {
    if (provider !== null) throw new CommandError('reset_doc only before connect')
    doc.destroy()
    doc = new Y.Doc()
    return { client_id: doc.clientID }
  },

  exit () {
    setImmediate(shutdown)
    return true
  }
}

const reply = (message) => {
  process.stdout.write(JSON.stringify(message) + '\n')
}

const handleLine = async (line) => {
  if (line.trim() === '') return
  let request
  try {
    request = JSON.parse(line)
  } catch (error) {
    reply({ id: null, ok: false, error: `bad JSON: ${error.message}` })
    return
  }
  const { id = null, cmd, ...args } = request
  const command = Object.hasOwn(commands, cmd) ? commands[cmd] : undefined
  if (command === undefined) {
    reply({ id, ok: false, error: `unknown command ${JSON.stringify(cmd)}` })
    return
  }
  try {
    const result = await command(args)
    reply({ id, ok: true, result })
  } catch (error) {
    const message = error instanceof CommandError ? error.message : String(error?.stack ?? error)
    reply({ id, ok: false, error: message })
  }
}

let shuttingDown = false
const shutdown = () => {
  if (shuttingDown) return
  shuttingDown = true
  if (provider !== null) provider.destroy()
  doc.destroy()
  // Let the answer to "exit" and the close frame leave before the process ends.
  process.stdout.write('', () => setTimeout(() => process.exit(0), 50))
}

process.on('uncaughtException', (error) => {
  console.error('driver: uncaught exception:', error)
})
process.on('unhandledRejection', (error) => {
  console.error('driver: unhandled rejection:', error)
})

const input = readline.createInterface({ input: process.stdin, crlfDelay: Infinity })
input.on('line', (line) => { handleLine(line) })
// The controlling process went away: leave rather than linger as an orphan.
input.on('close', shutdown)
