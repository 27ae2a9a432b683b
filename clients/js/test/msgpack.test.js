// MessagePack binary frames (`format: 'msgpack'`, subprotocol ringhub.msgpack) against a real
// server: the same API as JSON, bytes in data, mixed JSON and MessagePack subscribers, requests,
// errors, history, recovery and durable messages, and a bad message answered bad_request.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { encode, decode } from '@msgpack/msgpack'
import { connect } from '../src/index.js'
import { Server, jwt, next, until, FAST } from './helpers.js'

let srv
const clients = []
const open = (o = {}) => {
  const c = connect(srv.url, { reconnect: FAST, format: 'msgpack', ...o })
  clients.push(c)
  return c
}
const connected = (c) => (c.state === 'connected' ? Promise.resolve() : next(c, 'state', (s) => s === 'connected'))

before(async () => {
  srv = await Server.start()
})

after(async () => {
  for (const c of clients) c.close()
  await srv.stop()
})

test('msgpack: the subprotocol is negotiated and frames are binary', async () => {
  let proto = null
  const kinds = []
  class TapWS extends WebSocket {
    set onmessage(fn) {
      super.onmessage = fn && ((e) => (kinds.push(typeof e.data), fn(e)))
    }
    set onopen(fn) {
      super.onopen = fn && ((e) => ((proto = this.protocol), fn(e)))
    }
  }
  const a = open({ WebSocket: TapWS })
  const sub = a.subscribe('mp:neg')
  await sub.ready
  assert.equal(proto, 'ringhub.msgpack')
  assert.ok(kinds.length >= 1 && kinds.every((k) => k === 'object'), kinds.join())
})

test('msgpack: publish round trip, bytes as Uint8Array, a JSON subscriber gets {$bin}', async () => {
  const a = open()
  const j = open({ format: 'json' })
  const sa = a.subscribe('mp:bytes')
  const sj = j.subscribe('mp:bytes')
  await Promise.all([sa.ready, sj.ready])
  const gotA = next(sa, 'publication')
  const gotJ = next(sj, 'publication')
  const data = { text: 'hi', blob: new Uint8Array([0, 1, 2, 255]), n: -7, f: 1.5 }
  await a.publish('mp:bytes', 'file', data)
  const ma = await gotA
  assert.equal(ma.event, 'file')
  assert.ok(ma.data.blob instanceof Uint8Array)
  assert.deepEqual([...ma.data.blob], [0, 1, 2, 255])
  assert.equal(ma.data.n, -7)
  assert.equal(ma.data.f, 1.5)
  const mj = await gotJ
  assert.deepEqual(mj.data.blob, { $bin: 'AAEC/w==' })
  assert.equal(mj.data.text, 'hi')
})

test('msgpack: request reply and error codes', async () => {
  const a = open()
  await connected(a)
  const r = await a.publish('mp:req', 'e', 1)
  assert.equal(r, undefined)
  await assert.rejects(a.request('subscribe', 'bad*pattern*'), (e) => e.code === 'bad_request')
  await assert.rejects(a.publish('user:someone-else', 'e', 1), (e) => e.code === 'forbidden')
})

test('msgpack: history and recovery (v2 history on chat:*)', async () => {
  let gate = null
  const a = open({ getToken: async () => (await gate, jwt('mp-erin')) })
  const seen = []
  const sub = a.subscribe('chat:mprec', (m) => seen.push(m))
  await sub.ready
  await a.publish('chat:mprec', 'm', new Uint8Array([1]))
  await until(() => seen.length === 1)
  const h = await a.history('chat:mprec')
  assert.equal(h.publications.length, 1)
  assert.deepEqual([...h.publications[0].data], [1])
  let open_
  gate = new Promise((r) => (open_ = r))
  const dropped = next(a, 'state', (s) => s === 'reconnecting')
  await srv.api('POST', '/api/v1/disconnect', { user: 'mp-erin' })
  await dropped
  for (const i of [2, 3]) {
    const r = await srv.api('POST', '/api/v1/publish', { topic: 'chat:mprec', event: 'm', data: { $bin: Buffer.from([i]).toString('base64') } })
    assert.equal(r.status, 200)
  }
  const rec = next(sub, 'recovered')
  open_()
  const d = await rec
  assert.equal(d.recovered, true)
  assert.deepEqual(
    seen.map((m) => [...m.data]),
    [[1], [2], [3]],
  )
  const offs = seen.map((m) => m.offset)
  assert.deepEqual(offs, [offs[0], offs[0] + 1, offs[0] + 2])
})

test('msgpack: durable user message, acknowledged', async () => {
  const a = open({ token: jwt('mp-hank') })
  await connected(a)
  const got = next(a, 'message')
  const r = await srv.api('POST', '/api/v1/send', { user: 'mp-hank', event: 'notice', data: { n: 1 }, durable: true })
  assert.equal(r.status, 200)
  const m = await got
  assert.deepEqual(m.data, { n: 1 })
  assert.equal(m.offset, r.body.data.offset)
  const id = r.body.data.message_id
  await until(async () => (await srv.api('GET', `/api/v1/messages/${id}`)).body.data.status === 'acked', 10000, 'acked')
})

test('msgpack: a bad message is answered bad_request and the connection goes on', async () => {
  const ws = new WebSocket(srv.url, ['ringhub.msgpack'])
  ws.binaryType = 'arraybuffer'
  const frames = []
  ws.onmessage = (e) => frames.push(decode(new Uint8Array(e.data)))
  await new Promise((r, j) => ((ws.onopen = r), (ws.onerror = j)))
  ws.send(new Uint8Array([0x82, 0xa1])) // truncated
  await until(() => frames.length === 1)
  assert.equal(frames[0].event, 'error')
  assert.equal(frames[0].data.code, 'bad_request')
  ws.send(encode({ event: 'subscribe', topic: 'mp:after', id: 9 }))
  await until(() => frames.length === 2)
  assert.deepEqual(frames[1], { event: 'reply', id: 9, topic: 'mp:after' })
  ws.close()
})
