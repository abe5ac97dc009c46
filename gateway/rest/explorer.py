"""``/v1/docs``: a page to read the API's OpenAPI description and try each operation.

It is one self-contained HTML page (no external assets): it fetches
``/v1/openapi.json``, lists every operation with its parameters, and sends a
request built from the form with ``fetch``, showing the status, headers and body.
"""

from __future__ import annotations

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Boardcast REST API</title>
<style>
  body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 60rem;
         padding: 0 1rem; color: #1b1f24; }
  details { border: 1px solid #c9d1d9; border-radius: 6px; margin: .5rem 0; }
  summary { cursor: pointer; padding: .5rem .75rem; }
  summary code { font-weight: 600; }
  .method { display: inline-block; min-width: 4.5rem; font-weight: 700; }
  form { padding: .5rem .75rem 1rem; display: grid; gap: .5rem; }
  label { display: grid; gap: .2rem; }
  input, textarea { font: 14px ui-monospace, monospace; padding: .3rem; }
  textarea { min-height: 6rem; }
  button { justify-self: start; padding: .35rem 1rem; }
  pre { background: #f6f8fa; padding: .75rem; overflow: auto; max-height: 24rem; }
</style>
</head>
<body>
<main>
<h1>Boardcast REST API</h1>
<p>Every operation of <a href="/v1/openapi.json">/v1/openapi.json</a>.
Open one, fill it in and send it: the answer appears below the form.
The guide is <code>docs/rest.md</code>.</p>
<div id="operations" aria-live="polite">Loading&hellip;</div>
</main>
<script>
const root = document.getElementById('operations')

function field (name, where, required) {
  const label = document.createElement('label')
  label.textContent = `${name} (${where}${required ? ', required' : ''})`
  const input = document.createElement('input')
  input.name = `${where}:${name}`
  input.required = required
  label.append(input)
  return label
}

function operationForm (path, method, operation) {
  const form = document.createElement('form')
  for (const parameter of operation.parameters || []) {
    form.append(field(parameter.name, parameter.in, Boolean(parameter.required)))
  }
  const content = operation.requestBody && operation.requestBody.content
  const media = content ? Object.keys(content)[0] : null
  if (media) {
    const label = document.createElement('label')
    label.textContent = `body (${media})`
    const body = document.createElement('textarea')
    body.name = 'body'
    body.value = media === 'application/json' ? '{}' : ''
    label.append(body)
    form.append(label)
  }
  const send = document.createElement('button')
  send.type = 'submit'
  send.textContent = 'Send'
  const out = document.createElement('pre')
  out.setAttribute('aria-live', 'polite')
  form.append(send, out)
  form.addEventListener('submit', async (event) => {
    event.preventDefault()
    const data = new FormData(form)
    let url = path
    const query = new URLSearchParams()
    const headers = {}
    for (const [key, value] of data.entries()) {
      if (!value || key === 'body') continue
      const [where, name] = key.split(':')
      if (where === 'path') url = url.replace(`{${name}}`, encodeURIComponent(value))
      else if (where === 'query') query.set(name, value)
      else if (where === 'header') headers[name] = value
    }
    if (media) headers['Content-Type'] = media
    const qs = query.toString()
    out.textContent = 'Sending...'
    try {
      const response = await fetch(qs ? `${url}?${qs}` : url, {
        method: method.toUpperCase(), headers, body: media ? data.get('body') : undefined
      })
      const lines = [`${response.status} ${response.statusText}`]
      response.headers.forEach((value, name) => lines.push(`${name}: ${value}`))
      const text = await response.text()
      let shown = text
      try { shown = JSON.stringify(JSON.parse(text), null, 2) } catch (error) {}
      out.textContent = `${lines.join('\\n')}\\n\\n${shown}`
    } catch (error) {
      out.textContent = String(error)
    }
  })
  return form
}

fetch('/v1/openapi.json').then((response) => response.json()).then((spec) => {
  root.textContent = ''
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, operation] of Object.entries(methods)) {
      const details = document.createElement('details')
      const summary = document.createElement('summary')
      const verb = document.createElement('span')
      verb.className = 'method'
      verb.textContent = method.toUpperCase()
      const code = document.createElement('code')
      code.textContent = path
      summary.append(verb, code, ` \\u2014 ${operation.summary}`)
      details.append(summary, operationForm(path, method, operation))
      root.append(details)
    }
  }
}).catch((error) => { root.textContent = `Could not load the API description: ${error}` })
</script>
</body>
</html>
"""
