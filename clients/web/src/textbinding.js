// A <textarea> bound to a Y.Text: local typing becomes the smallest insert/delete, remote
// changes are applied to the field keeping the caret where the user was typing.

export function bindText (textarea, ytext, { transact, readOnly }) {
  let value = ytext.toString()
  textarea.value = value
  textarea.readOnly = readOnly

  const onInput = () => {
    const next = textarea.value
    if (next === value) return
    let start = 0
    const limit = Math.min(value.length, next.length)
    while (start < limit && value[start] === next[start]) start++
    let end = 0
    while (end < limit - start && value[value.length - 1 - end] === next[next.length - 1 - end]) end++
    const removed = value.length - start - end
    const inserted = next.slice(start, next.length - end)
    value = next
    transact(() => {
      if (removed > 0) ytext.delete(start, removed)
      if (inserted) ytext.insert(start, inserted)
    })
  }

  const observer = (event, transaction) => {
    if (transaction.local && ytext.toString() === textarea.value) {
      value = textarea.value
      return
    }
    // Shift the selection by the remote changes before it.
    let selStart = textarea.selectionStart
    let selEnd = textarea.selectionEnd
    let index = 0
    for (const op of event.delta) {
      if (op.retain) index += op.retain
      else if (op.insert) {
        const n = op.insert.length
        if (index <= selStart) selStart += n
        if (index <= selEnd) selEnd += n
        index += n
      } else if (op.delete) {
        const n = op.delete
        if (index < selStart) selStart -= Math.min(n, selStart - index)
        if (index < selEnd) selEnd -= Math.min(n, selEnd - index)
      }
    }
    value = ytext.toString()
    const focused = document.activeElement === textarea
    textarea.value = value
    if (focused) textarea.setSelectionRange(selStart, selEnd)
  }

  textarea.addEventListener('input', onInput)
  ytext.observe(observer)
  return () => {
    textarea.removeEventListener('input', onInput)
    ytext.unobserve(observer)
  }
}
