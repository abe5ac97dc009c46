// Hocuspocus as it ships, documents in memory, on 127.0.0.1:PORT.
// Usage: PORT=1234 node hocuspocus.mjs   (prints one line when it listens)
import { Server } from '@hocuspocus/server'

const port = Number.parseInt(process.env.PORT || '1234', 10)
const server = new Server({ port, address: '127.0.0.1', quiet: true })

await server.listen()
console.log(`hocuspocus ready on 127.0.0.1:${port}`)

const stop = async () => {
  await server.destroy()
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
