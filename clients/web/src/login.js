// The log-in page: username and password, then the code of an authenticator app when the
// server says the account has one; and a "Sign in with <provider>" link when the server
// offers the organisation's identity provider. Errors go to a live region that exists before any error,
// so screen readers read each one out; the field at fault is marked invalid and focused.

import { h } from './dom.js'
import { ProblemError, signInHref } from './auth.js'

// Longer input is refused before it is sent (the server has its own limits).
export const LOGIN_LIMITS = Object.freeze({ maxUsername: 200, maxPassword: 1024, maxCode: 16 })

function field ({ id, label, hint, ...input }) {
  const hintId = hint ? `${id}-hint` : null
  const el = h('input', { id, 'aria-describedby': ['login-message', hintId].filter(Boolean).join(' '), ...input })
  const wrapper = h('div', { class: 'login-field' },
    h('label', { for: id }, label),
    hint ? h('p', { class: 'login-hint', id: hintId }, hint) : null,
    el)
  return { wrapper, input: el }
}

function messageFor (error, { askedForCode }) {
  if (error instanceof ProblemError) {
    if (error.problem === 'invalid-credentials') {
      return askedForCode
        ? 'That did not work: check the code (it changes every 30 seconds) and your password.'
        : 'Wrong username or password.'
    }
    if (error.status === 429) {
      return error.retryAfter
        ? `Too many attempts. Try again in ${error.retryAfter} seconds.`
        : 'Too many attempts. Wait a minute, then try again.'
    }
    return `Could not log in: ${error.message}`
  }
  return 'Could not reach the server. Check your connection, then try again.'
}

/**
 * Show the log-in form in `container` until someone logs in; resolves to the user.
 * `reason`, if given, says why (for instance that the session ended).
 */
export function showLogin (container, auth, { reason = null } = {}) {
  return new Promise((resolve) => {
    const username = field({
      id: 'login-username',
      label: 'Username',
      name: 'username',
      type: 'text',
      autocomplete: 'username',
      autocapitalize: 'none',
      spellcheck: 'false',
      maxlength: String(LOGIN_LIMITS.maxUsername)
    })
    const password = field({
      id: 'login-password',
      label: 'Password',
      name: 'password',
      type: 'password',
      autocomplete: 'current-password',
      maxlength: String(LOGIN_LIMITS.maxPassword)
    })
    const code = field({
      id: 'login-code',
      label: 'Authentication code',
      hint: 'The 6-digit code your authenticator app shows for Boardcast.',
      name: 'totp',
      type: 'text',
      inputmode: 'numeric',
      autocomplete: 'one-time-code',
      maxlength: String(LOGIN_LIMITS.maxCode)
    })
    code.wrapper.hidden = true
    // Present (and empty) from the start: a live region added together with its text is
    // often not read out.
    const message = h('div', { id: 'login-message', class: 'login-message', role: 'alert', 'aria-live': 'assertive' })
    const submit = h('button', { type: 'submit' }, 'Log in')
    let askedForCode = false
    let busy = false

    const say = (text, invalid = []) => {
      message.textContent = text
      message.classList.toggle('is-error', Boolean(text) && invalid.length > 0)
      for (const f of [username, password, code]) {
        if (invalid.includes(f)) f.input.setAttribute('aria-invalid', 'true')
        else f.input.removeAttribute('aria-invalid')
      }
      invalid[0]?.input.focus()
    }

    const form = h('form', {
      class: 'login-form',
      novalidate: true,
      'aria-labelledby': 'login-title',
      onsubmit: async (event) => {
        event.preventDefault()
        if (busy) return
        const name = username.input.value.trim()
        const secret = password.input.value
        const totp = code.input.value.replace(/\s+/g, '')
        if (!name) return say('Enter your username.', [username])
        if (!secret) return say('Enter your password.', [password])
        if (askedForCode && !/^\d{6,8}$/.test(totp)) return say('Enter the 6-digit code from your authenticator app.', [code])
        busy = true
        form.setAttribute('aria-busy', 'true')
        submit.disabled = true
        submit.textContent = 'Logging in…'
        try {
          const user = await auth.login({ username: name, password: secret, totp: askedForCode ? totp : undefined })
          container.replaceChildren()
          resolve(user)
          return
        } catch (error) {
          if (error instanceof ProblemError && error.problem === 'mfa-required') {
            askedForCode = true
            code.wrapper.hidden = false
            code.input.value = ''
            say('This account also needs a code from its authenticator app.', [])
            code.input.focus()
          } else if (error instanceof ProblemError && error.problem === 'invalid-credentials') {
            password.input.value = ''
            code.input.value = ''
            say(messageFor(error, { askedForCode }), askedForCode ? [code, password] : [password, username])
          } else {
            say(messageFor(error, { askedForCode }), [])
            if (!(error instanceof ProblemError)) console.warn('Boardcast: log-in request failed', error)
          }
        } finally {
          busy = false
          form.removeAttribute('aria-busy')
          submit.disabled = false
          submit.textContent = 'Log in'
        }
      }
    },
    username.wrapper,
    password.wrapper,
    code.wrapper,
    message,
    submit)

    // The identity provider's sign-in is a plain link: the server runs the whole flow and
    // comes back to this page with the session cookies set (no token passes through here).
    const signIn = auth.signIn
      ? h('div', { class: 'login-sso' },
        h('a', { class: 'button sso-button', href: signInHref(auth.signIn) }, `Sign in with ${auth.signIn.name}`),
        h('p', { class: 'login-or', 'aria-hidden': 'true' }, 'or with a Boardcast password'))
      : null
    container.replaceChildren(
      h('div', { class: 'login' },
        h('h1', { id: 'login-title' }, 'Log in to Boardcast'),
        reason ? h('p', { class: 'login-reason' }, reason) : null,
        signIn,
        form))
    username.input.focus()
  })
}
