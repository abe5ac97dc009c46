// Apply Yjs updates with the real yjs package and print what the document converged to.
//
// Input (stdin, one JSON object): {"updates": ["<hex>", ...], "roots": {"name": "map" | "text" | "array"}}
// Output (stdout, one JSON object): {"content": {"name": <toJSON of that root>}, "state": {"client": clock}}
// yjs is loaded from the interop driver's node_modules (tests/interop/js), the one install we keep.

import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import * as path from 'node:path'

const here = path.dirname(fileURLToPath(import.meta.url))
const require = createRequire(path.join(here, '..', 'interop', 'js', 'package.json'))
const Y = require('yjs')

const chunks = []
for await (const chunk of process.stdin) chunks.push(chunk)
const input = JSON.parse(Buffer.concat(chunks).toString('utf8'))

const doc = new Y.Doc()
for (const hex of input.updates) {
  Y.applyUpdate(doc, Uint8Array.from(Buffer.from(hex, 'hex')))
}
const getters = { map: (n) => doc.getMap(n), text: (n) => doc.getText(n), array: (n) => doc.getArray(n) }
const content = {}
for (const [name, kind] of Object.entries(input.roots)) {
  content[name] = getters[kind](name).toJSON()
}
const state = {}
for (const [client, clock] of Y.decodeStateVector(Y.encodeStateVector(doc))) state[client] = clock
process.stdout.write(JSON.stringify({ content, state, pending: doc.store.pendingStructs !== null }) + '\n')
