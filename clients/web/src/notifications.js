// The bell in the top bar: the unread count and a list of your newest notifications, kept
// live by the server's stream (/v1/notifications/stream, Server-Sent Events). The browser's
// EventSource sends the session cookie and reconnects by itself with Last-Event-ID, so a
// notification recorded while the page was away arrives when it is back.

import { h, announce } from './dom.js'

const SHOWN = 20 // notifications in the list

export class NotificationBell {
  /** `request(path, options)` answers JSON (the app's REST helper, with its credentials). */
  constructor ({ request }) {
    this.request = request
    this.items = []
    this.unread = 0
    this.open = false
    this.button = h('button', {
      type: 'button',
      class: 'bell',
      id: 'bell',
      'aria-haspopup': 'true',
      'aria-expanded': 'false',
      onclick: () => this.toggle()
    })
    this.list = h('ul', { class: 'bell-list' })
    this.panel = h('section', { class: 'bell-panel', id: 'bell-panel', hidden: true, 'aria-label': 'Notifications' },
      h('div', { class: 'bell-head' },
        h('h2', {}, 'Notifications'),
        h('button', { type: 'button', onclick: () => this.markAllRead() }, 'Mark all read')),
      this.list)
    this.element = h('div', { class: 'bell-box' }, this.button, this.panel)
    this.stream = null
    this.render()
  }

  async start () {
    try {
      const page = await this.request(`/v1/notifications?limit=${SHOWN}`)
      this.items = page.items
      this.unread = page.unread_count
    } catch (error) {
      console.warn('Boardcast: could not read your notifications', error)
    }
    this.render()
    this.stream = new EventSource('/v1/notifications/stream', { withCredentials: true })
    this.stream.addEventListener('notification', (event) => {
      const item = JSON.parse(event.data)
      if (this.items.some((known) => known.id === item.id)) return
      this.items = [item, ...this.items].slice(0, SHOWN)
      if (!item.read) this.unread += 1
      this.render()
      announce(item.title)
    })
  }

  stop () {
    if (this.stream) this.stream.close()
    this.stream = null
  }

  toggle () {
    this.open = !this.open
    this.render()
  }

  async markAllRead () {
    try {
      const answer = await this.request('/v1/notifications/read', { method: 'POST', body: { all: true } })
      this.unread = answer.unread_count
      this.items = this.items.map((item) => ({ ...item, read: true }))
    } catch (error) {
      console.warn('Boardcast: could not mark notifications read', error)
    }
    this.render()
  }

  render () {
    const count = Math.max(0, this.unread)
    this.button.replaceChildren(
      h('span', { 'aria-hidden': 'true' }, '🔔'),
      h('span', { class: 'bell-count', hidden: count === 0 }, count > 99 ? '99+' : String(count)),
      h('span', { class: 'visually-hidden' }, `Notifications: ${count} unread`)
    )
    this.button.setAttribute('aria-expanded', String(this.open))
    this.panel.hidden = !this.open
    this.list.replaceChildren(...(this.items.length
      ? this.items.map((item) => h('li', { class: item.read ? 'read' : 'unread' },
        item.board_id ? h('a', { href: `#/b/${encodeURIComponent(item.board_id)}` }, item.title) : item.title,
        h('time', { datetime: new Date(item.created_at * 1000).toISOString() },
          new Date(item.created_at * 1000).toLocaleString())))
      : [h('li', { class: 'empty' }, 'Nothing yet')]))
  }
}
