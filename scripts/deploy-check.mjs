// Client side of scripts/deploy-check.sh: WebSocket and SSE checks through a proxy in front of
// two ringhub nodes. Node >= 20 with --experimental-websocket (the global WebSocket).
//
//   node --experimental-websocket scripts/deploy-check.mjs cross  wss://127.0.0.1:PORT/ws
//   node --experimental-websocket scripts/deploy-check.mjs sse    https://127.0.0.1:PORT
//   node --experimental-websocket scripts/deploy-check.mjs drain  wss://127.0.0.1:PORT/ws NODE PID
//   node --experimental-websocket scripts/deploy-check.mjs refused wss://127.0.0.1:PORT/ws
//   node --experimental-websocket scripts/deploy-check.mjs spread wss://127.0.0.1:PORT/ws
//   node --experimental-websocket scripts/deploy-check.mjs history wss://127.0.0.1:PORT/ws
//
// Every wait has a deadline and fails the check when it passes; nothing sleeps to synchronise.
// Prints "ok: ..." lines; exits 1 with "FAIL: ..." on the first failure.

const DEADLINE_MS = 10_000
const [mode, url, ...rest] = process.argv.slice(2)

function fail (msg) {
  console.log(`FAIL: ${msg}`)
  process.exit(1)
}

/** Resolves with the first value `pick` returns that is not undefined, or rejects at the deadline. */
function waitFor (what, subscribe, ms = DEADLINE_MS) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms)
    subscribe((v) => { clearTimeout(t); resolve(v) })
  })
}

/** A WebSocket through the proxy, with a queue of parsed envelopes and its close code. */
class Conn {
  constructor (url) {
    this.ws = new WebSocket(url)
    this.msgs = []
    this.waiters = []
    this.closed = null
    this.ws.onmessage = (e) => {
      let m
      try { m = JSON.parse(e.data) } catch { return }
      this.msgs.push(m)
      this.poke()
    }
    this.ws.onclose = (e) => { this.closed = { code: e.code, reason: e.reason }; this.poke() }
    this.ws.onerror = () => {}
  }

  poke () { for (const w of this.waiters.splice(0)) w() }

  /** Waits for the first queued envelope matching `pred` (removing it). */
  next (what, pred) {
    return waitFor(what, (done) => {
      const check = () => {
        const i = this.msgs.findIndex(pred)
        if (i >= 0) return done(this.msgs.splice(i, 1)[0])
        if (this.closed) return done({ closed: this.closed })
        this.waiters.push(check)
      }
      check()
    })
  }

  opened () {
    return waitFor('the upgrade', (done) => {
      if (this.ws.readyState === 1) return done(true)
      // Node 20's WebSocket reports a refused upgrade (non-101) with `error` and no `close`.
      this.ws.addEventListener('open', () => done(true))
      this.ws.addEventListener('error', () => done(false))
      this.ws.addEventListener('close', () => done(false))
    })
  }

  send (obj) { this.ws.send(JSON.stringify(obj)) }

  /** The node this connection landed on (the `info` reply). */
  async node () {
    const id = Math.floor(Math.random() * 1e9)
    this.send({ event: 'info', id })
    const r = await this.next('the info reply', (m) => m.event === 'reply' && m.id === id)
    if (!r.data || !r.data.node) fail(`info reply without node: ${JSON.stringify(r)}`)
    return r.data.node
  }

  async subscribe (topic, data) {
    const id = Math.floor(Math.random() * 1e9)
    this.send(data ? { event: 'subscribe', topic, id, data } : { event: 'subscribe', topic, id })
    const r = await this.next(`the subscribe reply on ${topic}`, (m) => m.id === id)
    if (r.event !== 'reply') fail(`subscribe ${topic}: ${JSON.stringify(r)}`)
    return r
  }

  close () { try { this.ws.close(1000) } catch {} }
}

/** Opens connections through the proxy until one has landed on each of two nodes. */
async function oneOnEach (url) {
  const byNode = new Map()
  const extra = []
  for (let i = 0; i < 12 && byNode.size < 2; i++) {
    const c = new Conn(url)
    if (!(await c.opened())) fail(`upgrade through the proxy refused (close ${JSON.stringify(c.closed)})`)
    const n = await c.node()
    if (byNode.has(n)) extra.push(c)
    else byNode.set(n, c)
  }
  if (byNode.size < 2) fail(`12 connections through the proxy all landed on ${[...byNode.keys()]}`)
  return { byNode, extra }
}

async function cross () {
  const { byNode, extra } = await oneOnEach(url)
  const [[na, a], [nb, b]] = [...byNode]
  console.log(`ok: connections through the proxy landed on ${na} and ${nb} (no affinity needed)`)
  for (const [from, fromName, to, toName] of [[a, na, b, nb], [b, nb, a, na]]) {
    const topic = `deploy:${toName}:${Date.now()}`
    await to.subscribe(topic)
    const token = Math.random().toString(36).slice(2)
    from.send({ topic, event: 'check', data: { token } })
    const got = await to.next(`the publication from ${fromName}`, (m) => m.topic === topic && m.event === 'check')
    if (got.closed || got.data?.token !== token) fail(`expected token ${token} on ${toName}, got ${JSON.stringify(got)}`)
    console.log(`ok: published on ${fromName}, received on ${toName} through the proxy`)
  }
  for (const c of [a, b, ...extra]) c.close()
}

async function sse () {
  const base = url.replace(/\/$/, '')
  const topic = `deploy:sse:${Date.now()}`
  const ctl = new AbortController()
  const res = await fetch(`${base}/sse?topics=${encodeURIComponent(topic)}`, { signal: ctl.signal })
  if (res.status !== 200) fail(`SSE through the proxy: HTTP ${res.status}`)
  if (!String(res.headers.get('content-type')).startsWith('text/event-stream')) fail('SSE: wrong content type')
  // The stream starts once the subscription is confirmed cluster-wide: publish from both nodes.
  const { byNode, extra } = await oneOnEach(base.replace(/^http/, 'ws') + '/ws')
  const want = new Map()
  for (const [name, c] of byNode) {
    const token = `${name}-${Math.random().toString(36).slice(2)}`
    want.set(token, name)
    c.send({ topic, event: 'check', data: { token } })
  }
  const reader = res.body.getReader()
  const dec = new TextDecoder()
  let buf = ''
  const seen = new Set()
  await waitFor('both SSE events', async (done) => {
    while (seen.size < want.size) {
      const { value, done: end } = await reader.read()
      if (end) fail('SSE stream ended early')
      buf += dec.decode(value, { stream: true })
      let i
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const ev = buf.slice(0, i)
        buf = buf.slice(i + 2)
        const data = ev.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n')
        if (!data) continue
        const m = JSON.parse(data)
        if (m.topic === topic && want.has(m.data?.token)) seen.add(m.data.token)
      }
    }
    done(true)
  })
  console.log(`ok: SSE through the proxy (unbuffered) received publications made on ${[...want.values()].join(' and ')}`)
  ctl.abort()
  for (const c of [...byNode.values(), ...extra]) c.close()
}

async function drain () {
  const [draining, pid] = rest
  const { byNode, extra } = await oneOnEach(url)
  const victim = byNode.get(draining)
  if (!victim) fail(`no connection on ${draining}`)
  process.kill(Number(pid), 'SIGTERM')
  // While the node drains (its /readyz is 503 and it refuses upgrades with 503), every new
  // client must still get in, on the other node.
  for (let i = 0; i < 6; i++) {
    const c = new Conn(url)
    if (!(await c.opened())) fail(`upgrade #${i} refused during the drain (close ${JSON.stringify(c.closed)})`)
    const n = await c.node()
    if (n === draining) fail(`upgrade #${i} landed on the draining node ${draining}`)
    c.close()
  }
  console.log(`ok: 6 new clients during ${draining}'s drain all got in, on the other node`)
  const end = await victim.next('the 1001 close from the draining node', () => false)
  if (end.closed?.code !== 1001) fail(`expected close 1001 through the proxy, got ${JSON.stringify(end)}`)
  console.log(`ok: ${draining}'s client got close 1001 "${end.closed.reason}" through the proxy after the drain delay`)
  for (const c of [...byNode.values(), ...extra]) c.close()
}

// Topics with history across nodes (needs the Redis store): a publication made on one node
// reaches a subscriber on the other with the offset its publisher was told, and a client that
// reconnects to the other node recovers it with `since`. The default namespace `chat:*` keeps
// history (100 publications).
async function history () {
  const { byNode, extra } = await oneOnEach(url)
  const [[na, a], [nb, b]] = [...byNode]
  const topic = `chat:deploy-${Date.now()}`
  const sub = await b.subscribe(topic)
  const epoch = sub.data?.epoch
  if (!epoch) fail(`subscribe to ${topic} on ${nb}: no epoch (is chat:* a history namespace?): ${JSON.stringify(sub)}`)
  const token = Math.random().toString(36).slice(2)
  const id = Math.floor(Math.random() * 1e9)
  a.send({ topic, event: 'check', data: { token }, id })
  const ack = await a.next('the publish reply with its offset', (m) => m.id === id)
  const offset = ack.data?.offset
  if (ack.event !== 'reply' || !Number.isInteger(offset)) fail(`publish on ${na}: ${JSON.stringify(ack)}`)
  const got = await b.next(`the stored publication on ${nb}`, (m) => m.topic === topic && m.event === 'check')
  if (got.closed || got.data?.token !== token || got.offset !== offset) {
    fail(`expected token ${token} at offset ${offset} on ${nb}, got ${JSON.stringify(got)}`)
  }
  console.log(`ok: history topic: published on ${na} (offset ${offset}), received on ${nb} with the same offset`)
  // Reconnect through the proxy until the new connection is on the publisher's node, and recover.
  let c
  for (let i = 0; i < 12 && !c; i++) {
    const t = new Conn(url)
    if (!(await t.opened())) fail('upgrade through the proxy refused')
    if ((await t.node()) === na) c = t
    else extra.push(t)
  }
  if (!c) fail(`12 connections through the proxy never landed on ${na}`)
  const rec = await c.subscribe(topic, { since: { epoch, offset: offset - 1 } })
  const pubs = rec.data?.publications || []
  if (rec.data?.recovered !== true || !pubs.some((p) => p.offset === offset && p.data?.token === token)) {
    fail(`recovery on ${na} with since ${epoch}:${offset - 1}: ${JSON.stringify(rec)}`)
  }
  console.log(`ok: history topic: a client recovering on ${na} with since got it back (recovered: true)`)
  for (const x of [a, b, c, ...extra]) x.close()
}

async function spread () {
  const { byNode, extra } = await oneOnEach(url)
  for (const c of [...byNode.values(), ...extra]) c.close()
}

async function refused () {
  const c = new Conn(url)
  if (await c.opened()) fail('upgrade through the proxy accepted while every node is unready')
  console.log('ok: new client refused by the proxy while every node\'s /readyz is 503')
}

const modes = { cross, sse, drain, refused, spread, history }
if (!modes[mode]) fail(`unknown mode ${mode}`)
modes[mode]().then(() => process.exit(0), (e) => fail(e.message))
