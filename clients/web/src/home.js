// The board list: projects, each with its boards, from the live lists of directory.js (a
// read-only document the server pushes changes to), re-rendered on every change.

import { h, inlineForm } from './dom.js'

// A viewer or commenter of a project may not add boards to it.
const READ_ONLY_ROLES = new Set(['viewer', 'commenter'])

export function renderHome (main, { directory, session, onNotice = () => {} }) {
  const readOnly = session.role === 'viewer'
  const failed = (error) => {
    if (error?.name === 'SessionExpired') return
    onNotice(`That did not work: ${error?.message || error}`)
  }
  const render = () => {
    const projects = directory.projectList()
    const sections = projects.map((project) => {
      const boards = directory.boardList(project.id)
      const headingId = `p-${project.id}`
      return h('section', { class: 'project', 'aria-labelledby': headingId },
        h('h2', { id: headingId }, project.name),
        boards.length
          ? h('ul', { class: 'board-list' }, boards.map((b) =>
            h('li', {}, h('a', { href: `#/b/${b.id}`, class: 'board-link' }, b.title))))
          : h('p', { class: 'empty' }, 'No boards in this project yet.'),
        readOnly || READ_ONLY_ROLES.has(project.role)
          ? null
          : inlineForm({
            label: `New board in ${project.name}`,
            button: 'Create board',
            placeholder: 'Board title',
            name: 'new-board',
            onSubmit: (title) => {
              directory.createBoard(title, project.id).then((id) => { location.hash = `#/b/${id}` }, failed)
            }
          }))
    })
    const synced = directory.loaded
    main.replaceChildren(
      h('div', { class: 'home' },
        h('h1', {}, 'Projects and boards'),
        directory.error ? h('p', { class: 'empty' }, directory.error) : null,
        !synced && !directory.error ? h('p', { class: 'empty' }, 'Loading…') : null,
        synced && projects.length === 0
          ? h('p', { class: 'empty' }, readOnly
            ? 'There are no projects yet.'
            : 'There are no projects yet. Create one, then a board in it.')
          : null,
        ...sections,
        readOnly
          ? null
          : h('section', { class: 'project new-project', 'aria-labelledby': 'new-project-title' },
            h('h2', { id: 'new-project-title' }, 'New project'),
            inlineForm({
              label: 'Project name',
              button: 'Create project',
              placeholder: 'Project name',
              name: 'new-project',
              onSubmit: (name) => { directory.createProject(name).catch(failed) }
            })),
        h('section', { class: 'project open-board', 'aria-labelledby': 'open-board-title' },
          h('h2', { id: 'open-board-title' }, 'Open a board by its id'),
          inlineForm({
            label: 'Board id',
            button: 'Open',
            placeholder: 'board id',
            name: 'open-board',
            onSubmit: (id) => { location.hash = `#/b/${encodeURIComponent(id)}` }
          }))))
  }
  // Keep focus where it was across re-renders (a new project appearing must not steal it).
  const rerender = () => {
    const active = document.activeElement
    const name = active?.name
    const value = active?.value
    const headingText = active?.closest?.('section')?.querySelector('h2')?.textContent
    render()
    if (name) {
      for (const section of main.querySelectorAll('section')) {
        if (section.querySelector('h2')?.textContent !== headingText) continue
        const again = section.querySelector(`[name="${name}"]`)
        if (again) {
          again.value = value
          again.focus()
        }
      }
    }
  }
  render()
  const unsubscribe = directory.subscribe(() => rerender())
  main.focus({ preventScroll: true })
  return unsubscribe
}
