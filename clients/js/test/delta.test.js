// Delta subscriptions (`delta: true`): handlers see full data rebuilt from Fossil deltas; a
// delta that does not apply is reported and the subscription recovers.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { connect } from '../src/index.js'
import { applyDelta } from '../src/fossil.js'
import { Server, next, until, FAST } from './helpers.js'

const CONFIG = {
  name: 'state:* with history, memory store',
  text: () => '[[topics]]\npattern = "state:*"\nhistory_size = 100\n\n[store]\nbackend = "memory"\n',
}
let srv
const clients = []
const open = () => {
  const c = connect(srv.url, { reconnect: FAST })
  clients.push(c)
  return c
}

before(async () => {
  srv = await Server.start(undefined, CONFIG)
})
after(async () => {
  for (const c of clients) c.close()
  await srv.stop()
})

// A 2 KB-ish state object; `n` changes a few fields (non-ASCII text included).
const state = (n) => ({
  version: n,
  players: Array.from({ length: 30 }, (_, i) => ({ id: i, name: `joueur-${i} é`, score: i === n % 30 ? n * 7 : i * 10 })),
})

test('applyDelta: copies, literals, checksum, and refusals', () => {
  const e = new TextEncoder()
  // "hello world" -> "hello there": 6 bytes copied, a literal; checksum of the target.
  const target = e.encode('hello there')
  let sum = 0
  for (let i = 0; i < 8; i += 4) sum += ((target[i] << 24) | (target[i + 1] << 16) | (target[i + 2] << 8) | target[i + 3]) >>> 0
  sum += (target[8] << 24) + (target[9] << 16) + (target[10] << 8)
  sum = sum >>> 0
  const D = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~'
  let ck = ''
  for (let v = sum; ; v = Math.floor(v / 64)) {
    ck = D[v % 64] + ck
    if (v < 64) break
  }
  const delta = e.encode(`B\n6@0,5:there${ck};`)
  assert.deepEqual(applyDelta(e.encode('hello world'), delta), target)
  assert.throws(() => applyDelta(e.encode('hello'), delta), /out of bounds|checksum/)
  for (let cut = 0; cut < delta.length; cut++) assert.throws(() => applyDelta(e.encode('hello world'), delta.subarray(0, cut)))
  assert.throws(() => applyDelta(e.encode('x'), e.encode('zzzzzz\n0;')), /too large/)
  assert.throws(() => applyDelta(e.encode('x'), e.encode('zzzzzzzzzzzz\n0;')), /overflow/)
})

test('delta subscription: every publication rebuilt exactly, deltas on the wire', async () => {
  const a = open()
  const seen = []
  const sub = a.subscribe('state:1', (m) => seen.push(m), { delta: true })
  await sub.ready
  // A raw socket beside it, to see the frames.
  const frames = []
  const ws = new WebSocket(srv.url)
  ws.onmessage = (e) => frames.push(JSON.parse(e.data))
  await new Promise((r) => (ws.onopen = r))
  ws.send(JSON.stringify({ event: 'subscribe', topic: 'state:1', id: 1, data: { delta: 'fossil' } }))
  await until(() => frames.some((f) => f.id === 1))
  for (let n = 1; n <= 10; n++) await a.publish('state:1', 'state', state(n))
  await until(() => seen.length === 10 && frames.length === 11)
  assert.deepEqual(
    seen.map((m) => m.data),
    Array.from({ length: 10 }, (_, i) => state(i + 1)),
  )
  assert.ok(seen.every((m) => m.delta === undefined))
  const pubs = frames.filter((f) => f.offset != null)
  assert.ok(pubs[0].data, 'the first is full')
  for (const f of pubs.slice(1)) {
    assert.equal(typeof f.delta, 'string')
    assert.ok(f.delta.length * 5 < JSON.stringify(state(1)).length, `${f.delta.length} bytes`)
  }
  ws.close()
})

test('a delta that does not apply is reported, then the subscription recovers', async () => {
  const a = open()
  const seen = []
  const errors = []
  const sub = a.subscribe('state:bad', (m) => seen.push(m.data), { delta: true })
  sub.on('error', (e) => errors.push(e.code))
  await sub.ready
  for (let n = 1; n <= 2; n++) await a.publish('state:bad', 'state', state(n))
  await until(() => seen.length === 2)
  // A corrupt delta for the next offset, as if the wire had mangled it.
  const o = sub.offset + 1
  a._msg(JSON.stringify({ topic: 'state:bad', event: 'state', delta: '5\n5@0,9;', offset: o }))
  assert.deepEqual(errors, ['delta_failed'])
  const rec = next(sub, 'recovered')
  await rec
  for (let n = 3; n <= 5; n++) await a.publish('state:bad', 'state', state(n))
  await until(() => seen.length === 5)
  assert.deepEqual(seen, [1, 2, 3, 4, 5].map(state), 'nothing corrupt was delivered')
})
