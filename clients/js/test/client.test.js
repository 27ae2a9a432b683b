// Against one real ringhub server shared by the tests of this file.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { connect, RinghubError } from '../src/index.js'
import { Server, jwt, next, until, states, FAST, isV2, hasHistory, freePort } from './helpers.js'

let srv
const clients = []
const open = (o = {}) => {
  const c = connect(srv.url, { reconnect: FAST, ...o })
  clients.push(c)
  return c
}
const connected = (c) => (c.state === 'connected' ? Promise.resolve() : next(c, 'state', (s) => s === 'connected'))
let v2 = false
let history = false
let presence = false

before(async () => {
  srv = await Server.start()
  const c = open()
  await connected(c)
  v2 = await isV2(c)
  history = await hasHistory(c)
  presence = await c.presenceStats('chat:probe').then(
    () => true,
    () => false,
  )
  console.log(`# server config: ${srv.variant.name}; v2: ${v2}; history on chat:*: ${history}; presence: ${presence}`)
})

after(async () => {
  for (const c of clients) c.close()
  await srv.stop()
})

test('subscribe / publish round trip', async () => {
  const a = open()
  const b = open()
  const st = states(a)
  const sub = a.subscribe('room:1')
  const got = next(sub, 'publication')
  await sub.ready
  assert.equal(sub.state, 'subscribed')
  assert.deepEqual(st, ['connecting', 'connected'])
  await connected(b)
  await b.publish('room:1', 'message', { text: 'hi' })
  const m = await got
  assert.equal(m.topic, 'room:1')
  assert.equal(m.event, 'message')
  assert.deepEqual(m.data, { text: 'hi' })
})

test('wildcard subscription and handler argument', async () => {
  const a = open()
  const seen = []
  const sub = a.subscribe('wild:*', (m) => seen.push(m.topic))
  await sub.ready
  await a.publish('wild:x', 'e', 1)
  await a.publish('wild:y', 'e', 2)
  await until(() => seen.length === 2, 5000, 'two publications')
  assert.deepEqual(seen, ['wild:x', 'wild:y'])
})

test('unsubscribe stops delivery', async () => {
  const a = open()
  const seen = []
  const sub = a.subscribe('unsub:1', (m) => seen.push(m.data))
  await sub.ready
  await a.publish('unsub:1', 'e', 1)
  await until(() => seen.length === 1)
  await sub.unsubscribe()
  assert.equal(sub.state, 'unsubscribed')
  const other = a.subscribe('unsub:marker')
  const marker = next(other, 'publication')
  await other.ready
  await a.publish('unsub:1', 'e', 2)
  await a.publish('unsub:marker', 'e', 3) // same publisher: delivered after the one above
  await marker
  assert.deepEqual(seen, [1])
})

test('request: id/reply, and error with code', async () => {
  const a = open()
  await connected(a)
  const r = await a.request('sum', 'calc:1', [1, 2])
  assert.ok(r === undefined || typeof r === 'object')
  await assert.rejects(a.publish('bad*topic', 'e', 1), (e) => e instanceof RinghubError && e.code === 'bad_request')
  const sub = a.subscribe('')
  await assert.rejects(sub.ready, (e) => e.code === 'bad_request')
  assert.equal(sub.state, 'unsubscribed')
})

test('private user topic is forbidden to others', async () => {
  const a = open({ token: jwt('mallory') })
  await connected(a)
  await assert.rejects(a.publish('user:alice', 'e', 1), (e) => e.code === 'forbidden')
})

test('request timeout rejects with code timeout (and leaves the queue)', async () => {
  // Nobody listens on this port: the request waits in the queue, then times out.
  const port = await freePort()
  const c = connect(`ws://127.0.0.1:${port}/ws`, { reconnect: FAST, requestTimeout: 150 })
  clients.push(c)
  c.on('error', () => {})
  const t0 = Date.now()
  await assert.rejects(c.request('e', 't'), (e) => e.code === 'timeout')
  assert.ok(Date.now() - t0 >= 140)
  assert.equal(c._q.length, 0)
  c.close()
  await assert.rejects(c.publish('t', 'e'), (e) => e.code === 'closed')
})

test('requests made while connecting are sent once connected', async () => {
  const a = open()
  const p = a.publish('queue:1', 'e', 1)
  assert.notEqual(a.state, 'connected')
  await p
})

test('close: state closed, pending requests rejected', async () => {
  const a = open()
  const st = states(a)
  await connected(a)
  a.close()
  assert.equal(a.state, 'closed')
  assert.equal(st.at(-1), 'closed')
  await assert.rejects(a.info(), (e) => e.code === 'closed')
})

test('reconnect and resubscribe after a server-side disconnect (API, close 4000)', async () => {
  const a = open({ token: jwt('bob') })
  const sub = a.subscribe('room:dc')
  await sub.ready
  const st = states(a)
  const back = next(sub, 'subscribed')
  const r = await srv.api('POST', '/api/v1/disconnect', { user: 'bob' })
  assert.equal(r.body.data.disconnected, 1)
  await back
  assert.deepEqual(st, ['disconnected', 'reconnecting', 'connected'])
  assert.equal(a.lastClose.code, 4000)
  const got = next(sub, 'publication')
  await srv.api('POST', '/api/v1/publish', { topic: 'room:dc', event: 'e', data: 1 })
  assert.equal((await got).data, 1)
})

test('getToken is called on every (re)connect', async () => {
  let n = 0
  const a = open({ getToken: async () => jwt('carol', { jti: String(++n) }) })
  await connected(a)
  assert.equal(n, 1)
  const again = next(a, 'state', (s) => s === 'connected')
  await srv.api('POST', '/api/v1/disconnect', { user: 'carol' })
  await again
  assert.equal(n, 2)
})

test('non-durable send reaches client.on("message") without a subscription', async () => {
  const a = open({ token: jwt('dave') })
  await connected(a)
  const got = next(a, 'message')
  const r = await srv.api('POST', '/api/v1/send', { user: 'dave', event: 'hello', data: { x: 1 } })
  assert.equal(r.status, 200)
  const m = await got
  assert.equal(m.topic, 'user:dave')
  assert.equal(m.event, 'hello')
})

test('recovery of publications made while disconnected (v2 history)', async (t) => {
  if (!history) return t.skip(`server keeps no history on chat:* (config used: ${srv.variant.name})`)
  let gate = null
  const a = open({ getToken: async () => (await gate, jwt('erin')) })
  const seen = []
  const sub = a.subscribe('chat:rec', (m) => seen.push(m))
  await sub.ready
  await a.publish('chat:rec', 'm', 1)
  await a.publish('chat:rec', 'm', 2)
  await until(() => seen.length === 2)
  let open_
  gate = new Promise((r) => (open_ = r))
  const dropped = next(a, 'state', (s) => s === 'reconnecting')
  await srv.api('POST', '/api/v1/disconnect', { user: 'erin' })
  await dropped
  for (const i of [3, 4, 5]) {
    const r = await srv.api('POST', '/api/v1/publish', { topic: 'chat:rec', event: 'm', data: i })
    assert.equal(r.status, 200)
  }
  const rec = next(sub, 'recovered')
  open_()
  const d = await rec
  assert.equal(d.recovered, true)
  assert.deepEqual(
    seen.map((m) => m.data),
    [1, 2, 3, 4, 5],
  )
  const offs = seen.map((m) => m.offset)
  assert.deepEqual(offs, offs.map((_, i) => offs[0] + i))
  assert.equal(sub.offset, offs.at(-1))
  await a.publish('chat:rec', 'm', 6)
  await until(() => seen.length === 6)
  assert.equal(seen[5].offset, offs.at(-1) + 1)
})

test('large history and recovery come in pages, all of them (v2 history)', async (t) => {
  if (!history) return t.skip(`server keeps no history on chat:* (config used: ${srv.variant.name})`)
  let gate = null
  const a = open({ getToken: async () => (await gate, jwt('pagey')) })
  const seen = []
  const sub = a.subscribe('chat:pages', (m) => seen.push(m))
  await sub.ready
  await a.publish('chat:pages', 'm', 0)
  await until(() => seen.length === 1)
  let open_
  gate = new Promise((r) => (open_ = r))
  const dropped = next(a, 'state', (s) => s === 'reconnecting')
  await srv.api('POST', '/api/v1/disconnect', { user: 'pagey' })
  await dropped
  // Six 900 KB publications: more than the 4 MiB outbound queue in one reply.
  const big = 'b'.repeat(900000)
  for (const i of [1, 2, 3, 4, 5, 6]) {
    const r = await srv.api('POST', '/api/v1/publish', { topic: 'chat:pages', event: 'm', data: { i, big } })
    assert.equal(r.status, 200)
  }
  const rec = next(sub, 'recovered')
  open_()
  await rec
  assert.deepEqual(
    seen.map((m) => (m.data.i === undefined ? m.data : m.data.i)),
    [0, 1, 2, 3, 4, 5, 6],
  )
  const h = await a.history('chat:pages', { limit: 50 })
  assert.deepEqual(
    h.publications.map((p) => p.offset),
    seen.map((m) => m.offset),
  )
  assert.equal(h.more, undefined)
})

test('recovery under concurrent publishing: no gap, no duplicate (v2 history)', async (t) => {
  if (!history) return t.skip(`server keeps no history on chat:* (config used: ${srv.variant.name})`)
  const a = open({ token: jwt('frank') })
  const seen = []
  const sub = a.subscribe('chat:busy', (m) => seen.push(m.offset))
  await sub.ready
  let stop = false
  const pub = (async () => {
    for (let i = 0; !stop && i < 400; i++) await srv.api('POST', '/api/v1/publish', { topic: 'chat:busy', event: 'm', data: i })
  })()
  await until(() => seen.length >= 20)
  for (let k = 0; k < 3; k++) {
    const back = next(sub, 'subscribed')
    await srv.api('POST', '/api/v1/disconnect', { user: 'frank' })
    await back
    await until(() => seen.length >= 20 * (k + 2))
  }
  stop = true
  await pub
  const top = (await srv.api('POST', '/api/v1/publish', { topic: 'chat:busy', event: 'm', data: 'end' })).body.data
  await until(() => seen.at(-1) === seen[0] + seen.length - 1 && seen.length > 60 && (!top.offset || seen.at(-1) === top.offset))
  assert.deepEqual(seen, seen.map((_, i) => seen[0] + i))
})

test('de-duplication: every frame received twice is delivered once (v2 history)', async (t) => {
  if (!history) return t.skip(`server keeps no history on chat:* (config used: ${srv.variant.name})`)
  // A network that duplicates every frame, in front of the real server.
  class DupWS extends WebSocket {
    set onmessage(fn) {
      super.onmessage = fn && ((e) => (fn(e), fn(e)))
    }
  }
  const a = open({ WebSocket: DupWS, token: jwt('gina') })
  const seen = []
  const sub = a.subscribe('chat:dup', (m) => seen.push(m.offset))
  await sub.ready
  for (let i = 0; i < 5; i++) await a.publish('chat:dup', 'm', i)
  await until(() => seen.length >= 5)
  const marker = a.subscribe('chat:dup-marker')
  await marker.ready
  const m = next(marker, 'publication')
  await a.publish('chat:dup-marker', 'm', 0)
  await m
  assert.equal(seen.length, 5)
  assert.deepEqual(seen, seen.map((_, i) => seen[0] + i))
})

test('since with an unknown epoch: recovery_failed, then live delivery from the current offset (v2 history)', async (t) => {
  if (!history) return t.skip(`server keeps no history on chat:* (config used: ${srv.variant.name})`)
  const a = open()
  await connected(a)
  for (let i = 0; i < 3; i++) await a.publish('chat:rf', 'm', i)
  const seen = []
  const sub = a.subscribe('chat:rf', (m) => seen.push(m), { since: { epoch: 'no-such-epoch', offset: 1 } })
  const failed = next(sub, 'recovery_failed')
  const d = await sub.ready
  assert.equal(d.recovered, false)
  assert.deepEqual(d.publications, [])
  assert.equal((await failed).offset, d.offset)
  assert.equal(sub.epoch, d.epoch)
  assert.equal(sub.offset, d.offset)
  await a.publish('chat:rf', 'm', 'live')
  await until(() => seen.length === 1)
  assert.equal(seen[0].data, 'live')
  assert.equal(seen[0].offset, d.offset + 1)
})

test('durable user message: handled once, acknowledged automatically (v2 inbox)', async (t) => {
  const probe = await srv.api('POST', '/api/v1/send', { user: 'nobody-probe', event: 'p', durable: true })
  if (!(probe.body.data && probe.body.data.message_id != null))
    return t.skip('server has no durable messages (send durable answers no message_id)')
  let raw = 0
  class TapWS extends WebSocket {
    set onmessage(fn) {
      super.onmessage = fn && ((e) => (String(e.data).includes('"ack":true') && raw++, fn(e)))
    }
  }
  const a = open({ WebSocket: TapWS, token: jwt('hank') })
  await connected(a)
  const handled = []
  let release
  const slow = new Promise((r) => (release = r))
  a.on('message', async (m) => {
    handled.push(m)
    await slow // acknowledged only once this resolves
  })
  const r = await srv.api('POST', '/api/v1/send', { user: 'hank', event: 'notice', data: { n: 1 }, durable: true })
  assert.equal(r.status, 200)
  const id = r.body.data.message_id
  await until(() => handled.length === 1)
  assert.equal(handled[0].offset, r.body.data.offset)
  assert.equal(typeof handled[0].ack, 'function')
  const st = await srv.api('GET', `/api/v1/messages/${id}`)
  assert.notEqual(st.body.data.status, 'acked')
  release()
  await until(async () => (await srv.api('GET', `/api/v1/messages/${id}`)).body.data.status === 'acked', 10000, 'acked')
  assert.equal(handled.length, 1)
  assert.ok(raw >= 1)
})

test('durable user message: autoAck false, redelivery on reconnect is de-duplicated (v2 inbox)', async (t) => {
  const probe = await srv.api('POST', '/api/v1/send', { user: 'nobody-probe', event: 'p', durable: true })
  if (!(probe.body.data && probe.body.data.message_id != null))
    return t.skip('server has no durable messages (send durable answers no message_id)')
  let raw = 0
  class TapWS extends WebSocket {
    set onmessage(fn) {
      super.onmessage = fn && ((e) => (String(e.data).includes('"ack":true') && raw++, fn(e)))
    }
  }
  const a = open({ WebSocket: TapWS, token: jwt('ivy'), autoAck: false })
  const handled = []
  a.on('message', (m) => handled.push(m))
  await connected(a)
  const r = await srv.api('POST', '/api/v1/send', { user: 'ivy', event: 'notice', data: 1, durable: true })
  const id = r.body.data.message_id
  await until(() => handled.length === 1)
  // Not acknowledged: a new connection of the user gets it again, and the client drops the copy.
  const back = next(a, 'state', (s) => s === 'connected')
  await srv.api('POST', '/api/v1/disconnect', { user: 'ivy' })
  await back
  await until(() => raw >= 2, 10000, 'redelivery')
  assert.equal(handled.length, 1)
  handled[0].ack()
  await until(async () => (await srv.api('GET', `/api/v1/messages/${id}`)).body.data.status === 'acked', 10000, 'acked')
})

test('info, presence, presence_stats, history (v2)', async (t) => {
  if (!presence) return t.skip(`no presence on chat:* (config used: ${srv.variant.name})`)
  const a = open({ token: jwt('judy') })
  const sub = a.subscribe('chat:pres')
  await sub.ready
  const me = await a.info()
  assert.equal(me.user, 'judy')
  assert.equal(typeof me.client, 'string')
  const p = await a.presence('chat:pres')
  assert.deepEqual(p.clients, [{ client: me.client, user: 'judy' }])
  assert.deepEqual(await a.presenceStats('chat:pres'), { clients: 1, users: 1 })
  if (!history) return
  for (let i = 0; i < 3; i++) await a.publish('chat:pres', 'm', i)
  const h = await a.history('chat:pres', { limit: 2 })
  assert.equal(h.publications.length, 2)
  assert.deepEqual(
    h.publications.map((x) => x.data),
    [1, 2],
  )
  assert.equal(h.publications[0].topic, 'chat:pres')
  await assert.rejects(a.presence('nohist:1'), (e) => e.code === 'not_available')
})

test('join and leave events (v2)', async (t) => {
  if (!presence) return t.skip(`no join/leave on chat:* (config used: ${srv.variant.name})`)
  const a = open({ token: jwt('kim') })
  const sub = a.subscribe('chat:jl')
  await sub.ready
  const b = open({ token: jwt('leo') })
  const joined = next(sub, 'join')
  const bs = b.subscribe('chat:jl')
  await bs.ready
  assert.equal((await joined).user, 'leo')
  const left = next(sub, 'leave')
  await bs.unsubscribe()
  assert.equal((await left).user, 'leo')
})

test('exclude_sender (v2)', async (t) => {
  if (!v2) return t.skip('server does not speak protocol v2 (info answers no client id)')
  const a = open()
  const b = open()
  const mine = []
  const sa = a.subscribe('excl:1', (m) => mine.push(m.data))
  const sb = b.subscribe('excl:1')
  await Promise.all([sa.ready, sb.ready])
  const other = next(sb, 'publication', (m) => m.data === 'end')
  await a.publish('excl:1', 'typing', 'hidden', { excludeSender: true })
  await a.publish('excl:1', 'm', 'end')
  await other
  await until(() => mine.includes('end'))
  assert.deepEqual(mine, ['end'])
})

test('SSE transport: receive-only', async () => {
  const a = open({ transport: 'sse' })
  assert.equal(a.transport, 'sse')
  const sub = a.subscribe('sse:1')
  await sub.ready
  assert.equal(a.state, 'connected')
  const got = next(sub, 'publication')
  await srv.api('POST', '/api/v1/publish', { topic: 'sse:1', event: 'e', data: { a: 'x\ny' } })
  assert.deepEqual((await got).data, { a: 'x\ny' })
  await assert.rejects(a.publish('sse:1', 'e', 1), (e) => e.code === 'not_available')
  // A second subscription reopens the stream with both topics.
  const sub2 = a.subscribe('sse:2')
  await sub2.ready
  const got2 = next(sub2, 'publication')
  const got1 = next(sub, 'publication')
  await srv.api('POST', '/api/v1/publish', { topic: 'sse:2', event: 'e', data: 2 })
  await srv.api('POST', '/api/v1/publish', { topic: 'sse:1', event: 'e', data: 1 })
  assert.equal((await got2).data, 2)
  assert.equal((await got1).data, 1)
})

test('no global WebSocket (Node 20 without the flag): a warning and errors that say what to do', async () => {
  const saved = Object.getOwnPropertyDescriptor(globalThis, 'WebSocket')
  const W = globalThis.WebSocket
  const warn = console.warn
  const warned = []
  console.warn = (...a) => warned.push(a.join(' '))
  Object.defineProperty(globalThis, 'WebSocket', { value: undefined, configurable: true, writable: true })
  try {
    const a = open()
    assert.equal(a.transport, 'sse')
    assert.equal(warned.length, 1)
    assert.match(warned[0], /SSE, which is receive-only/)
    for (const fix of ['--experimental-websocket', 'Node >= 22', 'WebSocket']) assert.ok(warned[0].includes(fix), warned[0])
    await assert.rejects(a.publish('t', 'e', 1), (e) => e.code === 'not_available' && e.message.includes('--experimental-websocket'))
    assert.throws(() => connect(srv.url, { transport: 'websocket' }), (e) => e.code === 'not_available' && e.message.includes('--experimental-websocket'))
    // A WebSocket passed in is used: no warning, publishing works.
    const b = open({ WebSocket: W })
    assert.equal(b.transport, 'websocket')
    await b.publish('nows:1', 'e', 1)
    assert.equal(warned.length, 1)
  } finally {
    if (saved) Object.defineProperty(globalThis, 'WebSocket', saved)
    else delete globalThis.WebSocket
    console.warn = warn
  }
})
