// The admin dashboard served at `/admin`: polls the HTTP API every second with the API key
// (kept in sessionStorage) and draws connections and messages/s per shard with uPlot.
const $ = (id) => document.getElementById(id)
const KEY = 'ringhub-admin-key'
const POINTS = 120 // seconds of history in the charts
const COLORS = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#ca8a04', '#db2777']

let key = sessionStorage.getItem(KEY)
let timer = 0
let prev = null // the previous stats, with the time they were read
let charts = null
const series = { t: [], conns: [], rate: [] }

const el = (tag, cls, text) => {
  const e = document.createElement(tag)
  if (cls) e.className = cls
  if (text != null) e.textContent = text
  return e
}

class ApiError extends Error {}

async function api(method, path, body) {
  const r = await fetch(path, {
    method,
    cache: 'no-store',
    headers: { authorization: 'Bearer ' + key, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  })
  const j = await r.json().catch(() => ({ success: false, error: `HTTP ${r.status}` }))
  if (r.status === 401 || r.status === 403) {
    signOut(j.error || `HTTP ${r.status}`)
    throw new ApiError(j.error)
  }
  if (!j.success) throw new ApiError(j.error || `HTTP ${r.status}`)
  return j.data
}

function signOut(why) {
  clearTimeout(timer)
  timer = 0
  key = null
  sessionStorage.removeItem(KEY)
  $('dash').hidden = $('logout').hidden = true
  $('login').hidden = false
  $('login-error').textContent = why || ''
  $('status').textContent = 'signed out'
  $('status').dataset.state = 'disconnected'
}

function signedIn() {
  $('dash').hidden = $('logout').hidden = false
  $('login').hidden = true
  $('login-error').textContent = ''
  if (!timer) poll()
}

// `floor`: the least top of the y axis, so that noise (the dashboard's own API calls count as
// messages out) stays near the bottom instead of filling the chart.
function makeChart(el, shards, floor) {
  const opts = {
    width: Math.max(300, el.clientWidth),
    height: 220,
    legend: { show: true },
    axes: [{}, { size: 70 }],
    scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(floor, max * 1.1)] } },
    series: [{}, ...Array.from({ length: shards }, (_, i) => ({ label: 'shard ' + i, stroke: COLORS[i % COLORS.length], width: 2 }))],
  }
  return new uPlot(opts, [[], ...Array.from({ length: shards }, () => [])], el)
}

function chartData(cols) {
  return [series.t, ...cols[0].map((_, i) => cols.map((c) => c[i]))]
}

function record(stats) {
  const now = performance.now()
  const shards = stats.shards
  if (!charts || charts.shards !== shards.length) {
    for (const id of ['chart-conns', 'chart-rate']) $(id).replaceChildren()
    series.t = []
    series.conns = []
    series.rate = []
    charts = {
      shards: shards.length,
      conns: makeChart($('chart-conns'), shards.length, 10),
      rate: makeChart($('chart-rate'), shards.length, 100),
    }
  }
  const dt = prev ? (now - prev.at) / 1000 : 0
  const rateOf = (field) => shards.map((s, i) => (dt > 0 ? Math.max(0, (s[field] - prev.stats.shards[i][field]) / dt) : 0))
  const out = rateOf('messages_out')
  const inn = rateOf('messages_in')
  series.t.push(Date.now() / 1000)
  series.conns.push(shards.map((s) => s.connections))
  series.rate.push(out)
  if (series.t.length > POINTS) {
    series.t.shift()
    series.conns.shift()
    series.rate.shift()
  }
  charts.conns.setData(chartData(series.conns))
  charts.rate.setData(chartData(series.rate))
  prev = { at: now, stats }
  const t = stats.total
  const sum = (a) => Math.round(a.reduce((x, y) => x + y, 0))
  $('connections').textContent = String(t.connections)
  $('rate-in').textContent = String(sum(inn))
  $('rate-out').textContent = String(sum(out))
  $('errors').textContent = String(t.errors)
  $('slow').textContent = String(t.slow_consumers)
  $('shards').textContent = String(shards.length)
  $('chart-rate').dataset.last = String(sum(out))
  $('chart-rate').dataset.points = String(series.t.length)
}

function renderTopics(list) {
  $('topic-count').textContent = String(list.length)
  const rows = list
    .sort((a, b) => b.subscribers - a.subscribers || a.topic.localeCompare(b.topic))
    .slice(0, 200)
    .map((t) => {
      const tr = el('tr')
      tr.dataset.topic = t.topic
      tr.append(el('td', '', t.topic), el('td', '', String(t.subscribers)))
      tr.onclick = () => {
        $('presence-topic').value = t.topic
        showPresence(t.topic)
      }
      return tr
    })
  $('topics').replaceChildren(...rows)
}

function renderEvents(data) {
  const items = data.events
    .slice()
    .reverse()
    .map((e) => {
      const li = el('li')
      li.append(
        el('time', '', new Date(e.time_ms).toLocaleTimeString() + ' '),
        el('span', 'kind ' + e.kind, e.kind),
        el('code', '', e.client + (e.user ? ` (${e.user})` : '')),
        ' ' + e.detail,
      )
      return li
    })
  $('events').replaceChildren(...items)
}

// One row per live node (a cluster lists every node registered in Redis; one node lists itself).
function renderNodes(data) {
  const rows = data.nodes.map((n) => {
    const tr = el('tr')
    tr.append(el('td', '', String(n.node)), el('td', '', String(n.connections ?? '')), el('td', '', String(n.shards ?? '')))
    return tr
  })
  $('nodes').replaceChildren(...rows)
}

async function showPresence(topic) {
  const ul = $('presence')
  try {
    const { clients } = await api('POST', '/api/v1/presence', { topic })
    ul.replaceChildren(...clients.map((c) => el('li', '', c.client + (c.user ? ` (${c.user})` : ''))))
    if (!clients.length) ul.replaceChildren(el('li', '', 'nobody (presence lists exact subscribers of topics with presence = true)'))
  } catch (e) {
    ul.replaceChildren(el('li', 'error', e.message))
  }
}

async function poll() {
  timer = -1
  try {
    const [stats, topics, events] = await Promise.all([
      api('GET', '/api/v1/stats'),
      api('GET', '/api/v1/topics'),
      api('GET', '/api/v1/events'),
    ])
    record(stats)
    renderTopics(topics.topics)
    renderEvents(events)
    // Apart: a cluster whose Redis is down answers 503 here, which must not blank the rest.
    api('GET', '/api/v1/nodes').then(renderNodes, () => $('nodes').replaceChildren())
    $('status').textContent = 'live'
    $('status').dataset.state = 'connected'
  } catch (e) {
    if (!key) return
    $('status').textContent = 'error: ' + e.message
    $('status').dataset.state = 'disconnected'
  }
  if (key) timer = setTimeout(poll, 1000)
}

$('login').onsubmit = async (e) => {
  e.preventDefault()
  key = $('key').value
  try {
    await api('GET', '/api/v1/stats')
  } catch {
    return
  }
  sessionStorage.setItem(KEY, key)
  $('key').value = ''
  signedIn()
}
$('logout').onclick = () => signOut()
$('presence-form').onsubmit = (e) => {
  e.preventDefault()
  showPresence($('presence-topic').value.trim())
}
$('publish').onsubmit = async (e) => {
  e.preventDefault()
  const raw = $('pub-data').value.trim()
  const body = { topic: $('pub-topic').value.trim(), event: $('pub-event').value.trim() }
  try {
    if (raw) body.data = JSON.parse(raw)
    const d = await api('POST', '/api/v1/publish', body)
    $('pub-result').textContent = `delivered to ${d.delivered}` + (d.offset != null ? `, offset ${d.offset}` : '')
  } catch (err) {
    $('pub-result').textContent = 'failed: ' + err.message
  }
}
addEventListener('resize', () => {
  if (!charts) return
  for (const [id, c] of [['chart-conns', charts.conns], ['chart-rate', charts.rate]])
    c.setSize({ width: Math.max(300, $(id).clientWidth), height: 220 })
})
if (key) signedIn()
