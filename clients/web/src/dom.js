// Small DOM helpers: h('button', { class: 'x', onclick }, 'text', child...).

export function h (tag, props = {}, ...children) {
  const el = document.createElement(tag)
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value)
    else if (key === 'class') el.className = value
    else if (key === 'dataset') Object.assign(el.dataset, value)
    else if (key in el && typeof value !== 'string') el[key] = value
    else el.setAttribute(key, value === true ? '' : value)
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue
    el.append(child instanceof Node ? child : String(child))
  }
  return el
}

export function announce (message) {
  const region = document.getElementById('announcer')
  region.textContent = ''
  // A new text node in a live region is read out even when the text repeats.
  setTimeout(() => { region.textContent = message }, 30)
}

export function initials (name) {
  const parts = name.trim().split(/\s+/).filter(Boolean)
  return (parts.length > 1 ? parts[0][0] + parts.at(-1)[0] : (parts[0] || '?').slice(0, 2)).toUpperCase()
}

/** An inline form: one labelled text field and a submit button. */
export function inlineForm ({ label, button, placeholder = '', onSubmit, disabled = false, name }) {
  const id = `f-${Math.random().toString(36).slice(2, 9)}`
  const input = h('input', { id, type: 'text', placeholder, autocomplete: 'off', disabled, name })
  const form = h('form', {
    class: 'inline-form',
    onsubmit: (event) => {
      event.preventDefault()
      const value = input.value.trim()
      if (!value) return
      onSubmit(value)
      input.value = ''
    }
  },
  h('label', { for: id, class: 'visually-hidden' }, label),
  input,
  h('button', { type: 'submit', disabled }, button))
  form.input = input
  return form
}
