import { defineConfig } from 'vite'

// The gateway serves dist/ at `/` (gateway/webapp.py). During `npm run dev`, Vite proxies
// the board sockets to a Boardcast server on the default port.
export default defineConfig({
  base: '/',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    // Reproducible: no source maps with absolute paths, content-hashed names only.
    sourcemap: false,
    chunkSizeWarningLimit: 400
  },
  server: {
    proxy: { '/ws': { target: 'ws://127.0.0.1:8000', ws: true } }
  }
})
