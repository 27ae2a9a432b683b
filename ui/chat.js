// The chat demo served at `/`: the ringhub JS client (served from clients/js/src/index.js) on
// rooms `chat:<room>` (history, presence, join/leave: the server's default [[topics]]) and
// `live:<room>` for what is not worth keeping (typing indicators, name announcements).
// Connections are anonymous: presence lists client ids; display names travel in message data.
import { connect } from '/assets/ringhub-client.js'

const $ = (id) => document.getElementById(id)
const noop = () => {}
const wsUrl = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws'
const client = connect(wsUrl, { reconnect: { initialDelay: 250, maxDelay: 2000 } })
window.ringhubChat = { client }

const names = new Map() // client id -> display name
const me = { name: localStorage.getItem('ringhub-name') || '', client: '' }
let meReady = Promise.resolve()
let room = null // the room shown

const el = (tag, cls, text) => {
  const e = document.createElement(tag)
  if (cls) e.className = cls
  if (text != null) e.textContent = text
  return e
}

client.on('state', (s) => {
  $('status').textContent = s
  $('status').dataset.state = s
  if (s === 'connected') {
    // A new connection has a new client id.
    meReady = client.info().then((d) => {
      me.client = d.client
      $('me-client').textContent = d.client
      if (me.name) names.set(d.client, me.name)
    }, noop)
  }
})
client.on('error', (e) => console.warn('ringhub', e))

// Rooms: the ones joined before (this browser), and two to start with.
const rooms = () => {
  try {
    const r = JSON.parse(localStorage.getItem('ringhub-rooms'))
    if (Array.isArray(r) && r.length) return r
  } catch {}
  return ['lobby', 'random']
}
function renderRooms() {
  const ul = $('rooms')
  ul.replaceChildren()
  for (const r of rooms()) {
    const li = el('li', room && room.name === r ? 'active' : '', '# ' + r)
    li.dataset.room = r
    li.onclick = () => {
      $('room').value = r
      if ($('name').value.trim()) join($('name').value.trim(), r)
      else $('name').focus()
    }
    ul.append(li)
  }
}

function renderPresence(cur) {
  if (cur !== room) return
  const ul = $('presence')
  ul.replaceChildren()
  for (const id of [...cur.present.keys()].sort()) {
    const li = el('li')
    li.dataset.client = id
    li.append(el('b', '', names.get(id) || '?'), ' ', el('code', '', id))
    if (id === me.client) li.append(' (you)')
    ul.append(li)
  }
  $('presence-count').textContent = String(cur.present.size)
}

function renderTyping(cur) {
  if (cur !== room) return
  const now = Date.now()
  const who = []
  for (const [id, t] of cur.typing) t.until > now ? who.push(t.name) : cur.typing.delete(id)
  $('typing').textContent = who.length ? `${who.join(', ')} ${who.length > 1 ? 'are' : 'is'} typing…` : ''
}

// Data of an event that is not a chat message, readable: `text` first, then `key: value`.
function describe(d) {
  if (d == null) return ''
  if (typeof d !== 'object') return String(d)
  if (Array.isArray(d)) return d.map(describe).join(', ')
  const rest = Object.entries(d)
    .filter(([k]) => k !== 'text')
    .map(([k, v]) => `${k}: ${v !== null && typeof v === 'object' ? JSON.stringify(v) : v}`)
  const text = d.text != null ? String(d.text) : ''
  return rest.length ? `${text}${text ? ' ' : ''}(${rest.join(', ')})` : text
}

// Shows a publication of chat:<room> once, in offset order (history, live and recovered
// publications may arrive in any interleaving).
function show(cur, p) {
  if (cur !== room) return
  if (p.offset != null) {
    if (cur.shown.has(p.offset)) return
    cur.shown.add(p.offset)
  }
  const d = p.data && typeof p.data === 'object' ? p.data : {}
  if (d.client && d.name) names.set(d.client, String(d.name))
  const li = el('li')
  li.dataset.offset = p.offset ?? ''
  if (p.event === 'message') {
    li.append(el('span', 'who', String(d.name || '?')), el('span', 'text', String(d.text ?? '')))
    if (d.client) cur.typing.delete(d.client)
  } else if (p.event === 'hello') {
    li.className = 'system'
    li.append(el('span', 'text', `${d.name || '?'} joined`))
  } else {
    // Anything else (e.g. published through the API): its event name and its data in words.
    li.className = 'system event'
    li.append(el('span', 'ev', p.event), el('span', 'text', describe(p.data)))
  }
  if (p.offset != null) li.append(el('span', 'off', '#' + p.offset))
  const ol = $('messages')
  const stick = ol.scrollTop + ol.clientHeight >= ol.scrollHeight - 30
  let after = ol.lastElementChild
  while (after && p.offset != null && Number(after.dataset.offset) > p.offset) after = after.previousElementSibling
  after ? after.after(li) : ol.prepend(li)
  if (stick) ol.scrollTop = ol.scrollHeight
  renderPresence(cur)
  renderTyping(cur)
}

function system(text) {
  $('messages').append(el('li', 'system', text))
}

async function loadHistory(cur) {
  try {
    const h = await client.history(cur.chat.topic, { limit: 50 })
    for (const p of h.publications) show(cur, p)
  } catch (e) {
    if (cur === room) system(`history not available: ${e.message}`)
  }
}

async function announce(cur) {
  await meReady
  if (cur === room && me.client)
    client.publish(cur.live.topic, 'here', { name: me.name, client: me.client }, { excludeSender: true }).catch(noop)
}

async function refreshPresence(cur) {
  try {
    const { clients } = await client.presence(cur.chat.topic)
    cur.present = new Map(clients.map((c) => [c.client, c]))
    renderPresence(cur)
  } catch (e) {
    if (cur === room) system(`presence not available: ${e.message}`)
  }
}

function leave() {
  const cur = room
  room = null
  if (!cur) return
  cur.live.unsubscribe()
  cur.chat.unsubscribe()
}

async function join(name, r) {
  me.name = name
  localStorage.setItem('ringhub-name', name)
  localStorage.setItem('ringhub-rooms', JSON.stringify([r, ...rooms().filter((x) => x !== r)].slice(0, 12)))
  $('me-name').textContent = name
  if (me.client) names.set(me.client, name)
  if (room && room.name === r) return
  leave()
  const cur = (room = { name: r, shown: new Set(), present: new Map(), typing: new Map(), lastTyping: 0 })
  $('messages').replaceChildren()
  $('typing').textContent = ''
  $('room-name').textContent = r
  renderRooms()
  // The ephemeral topic first, so that the others' answers to our join reach us.
  cur.live = client.subscribe('live:' + r, (p) => {
    const d = p.data || {}
    if (!d.client || cur !== room) return
    if (d.name) names.set(d.client, String(d.name))
    if (p.event === 'typing') {
      cur.typing.set(d.client, { name: String(d.name || '?'), until: Date.now() + 3000 })
      setTimeout(() => renderTyping(cur), 3100)
    }
    renderPresence(cur)
    renderTyping(cur)
  })
  await cur.live.ready.catch(noop)
  cur.chat = client.subscribe('chat:' + r, (p) => show(cur, p))
  cur.chat.on('join', (d) => {
    cur.present.set(d.client, d)
    renderPresence(cur)
    announce(cur) // tells the newcomer who we are
  })
  cur.chat.on('leave', (d) => {
    cur.present.delete(d.client)
    cur.typing.delete(d.client)
    renderPresence(cur)
    renderTyping(cur)
  })
  // After the first subscribe and after every reconnect (recovered publications are shown by
  // then): who is here now, and tell them who we are.
  cur.chat.on('subscribed', () => {
    refreshPresence(cur)
    announce(cur)
  })
  cur.chat.on('recovery_failed', () => {
    // Another epoch, or too much missed: start over from history.
    if (cur !== room) return
    cur.shown.clear()
    $('messages').replaceChildren()
    loadHistory(cur)
  })
  try {
    await cur.chat.ready
  } catch (e) {
    system(`cannot join ${r}: ${e.message}`)
    return
  }
  await loadHistory(cur)
  await meReady
  client.publish(cur.chat.topic, 'hello', { name, client: me.client }).catch(noop)
  $('text').disabled = $('send-btn').disabled = false
  $('text').placeholder = `Message #${r}`
  $('text').focus()
}

$('name').value = me.name
$('join').onsubmit = (e) => {
  e.preventDefault()
  join($('name').value.trim(), $('room').value.trim())
}
$('send').onsubmit = (e) => {
  e.preventDefault()
  const cur = room
  const text = $('text').value
  if (!cur || !text.trim()) return
  $('text').value = ''
  cur.lastTyping = 0
  client
    .publish(cur.chat.topic, 'message', { name: me.name, client: me.client, text })
    .catch((err) => system(`not sent (${err.code}): ${text}`))
}
$('text').oninput = () => {
  const cur = room
  if (!cur || !$('text').value || Date.now() - cur.lastTyping < 1500) return
  cur.lastTyping = Date.now()
  client.publish(cur.live.topic, 'typing', { name: me.name, client: me.client }, { excludeSender: true }).catch(noop)
}
renderRooms()
