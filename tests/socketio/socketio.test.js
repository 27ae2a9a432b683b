// socket.io-client 4.8, unchanged from npm, against ringhub's /socket.io/ endpoint (the example
// server examples/socketio.rs: the seed application's chat events as handlers), on both shells.
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdtempSync, writeFileSync, rmSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as delay } from 'node:timers/promises'
import { io, Manager } from 'socket.io-client'
import { jwt, freePort, SECRET, API_KEY } from '../../clients/js/test/helpers.js'

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..')

function exampleBin() {
  if (process.env.RINGHUB_SIO_BIN) return process.env.RINGHUB_SIO_BIN
  const t = process.env.CARGO_TARGET_DIR || join(ROOT, 'target')
  const p = join(t, 'debug', 'examples', 'socketio')
  if (!existsSync(p)) throw new Error(`no example server at ${p}: run cargo build --example socketio`)
  return p
}

/** Starts the example server; `opts.port` and `opts.extra` (more TOML) for a restart. */
async function startServer(ioMode, opts = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'ringhub-sio-'))
  const port = opts.port || (await freePort())
  const config = `listen = "127.0.0.1:${port}"
io = "${ioMode}"
shards = 2
pin_cores = false
stats_interval = "0s"
[auth]
jwt_secret = "${SECRET}"
anonymous = false
[api]
key = "${API_KEY}"
[[topics]]
pattern = "chat:*"
history_size = 100
presence = true
[[topics]]
pattern = "tiny:*"
history_size = 2
presence = true
${opts.extra || ''}`
  writeFileSync(join(dir, 'ringhub.toml'), config)
  const proc = spawn(exampleBin(), [join(dir, 'ringhub.toml')], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] })
  let log = ''
  proc.stderr.on('data', (d) => (log += d))
  let exited = false
  const exit = new Promise((r) => proc.on('exit', () => ((exited = true), r())))
  const http = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 20000
  for (;;) {
    if (exited) throw new Error(`server exited at start: ${log}`)
    try {
      if ((await fetch(http + '/healthz')).ok) break
    } catch {}
    if (Date.now() > deadline) throw new Error(`server not healthy: ${log}`)
    await delay(25) // polling interval of the readiness probe
  }
  return {
    url: http,
    log: () => log,
    async api(path, body) {
      const r = await fetch(http + path, {
        method: 'POST',
        headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      })
      assert.equal(r.status, 200, await r.clone().text())
      return (await r.json()).data
    },
    async get(path) {
      const r = await fetch(http + path, { headers: { authorization: `Bearer ${API_KEY}` } })
      assert.equal(r.status, 200, await r.clone().text())
      return (await r.json()).data
    },
    async stop(signal = 'SIGKILL') {
      proc.kill(signal)
      await exit
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

/** The seed's client options (auth token, reconnection), WebSocket transport. */
function seedOptions(token) {
  return {
    auth: { token },
    reconnection: true,
    reconnectionDelay: 1000,
    reconnectionDelayMax: 5000,
    reconnectionAttempts: 5,
    transports: ['websocket'],
  }
}

const once = (s, ev) => new Promise((res) => s.once(ev, (...a) => res(a)))

/** Polls `cond` (async) until it holds: state polled, not a timed wait. */
async function until(cond, what) {
  const deadline = Date.now() + 10000
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`)
    await delay(25) // polling interval
  }
}

/**
 * Cuts the client's network: the TCP socket under its WebSocket is destroyed (no close frame,
 * no DISCONNECT), with reconnection held off until `resume` so the test publishes while it is
 * away; resolves once the server dropped it (the room's presence is empty).
 */
async function cut(srv, s, room) {
  s.io.reconnection(false)
  const gone = once(s, 'disconnect')
  s.io.engine.transport.ws._socket.destroy()
  await gone
  await until(async () => (await srv.api('/api/v1/presence', { topic: room })).clients.length === 0, 'server saw the cut')
  return async () => {
    const back = once(s, 'connect')
    s.io.reconnection(true)
    s.connect()
    await back
  }
}

async function connected(url, token, extra = {}) {
  const s = io(url, { ...seedOptions(token), ...extra, forceNew: true })
  const [err] = await Promise.race([once(s, 'connect').then(() => [null]), once(s, 'connect_error')])
  if (err) throw err
  return s
}

for (const ioMode of ['uring', 'epoll']) {
  describe(`socket.io-client on --io ${ioMode}`, () => {
    let srv
    const sockets = []
    const client = async (url, token, extra) => {
      const s = await connected(url, token, extra)
      sockets.push(s)
      return s
    }
    before(async () => {
      srv = await startServer(ioMode)
    })
    after(async () => {
      sockets.forEach((s) => s.disconnect())
      await srv.stop()
    })

    test('connects with the auth token; emit with ack reaches the handler', async () => {
      const s = await client(srv.url, jwt('alice'))
      assert.ok(s.connected && s.id)
      assert.deepEqual(await s.emitWithAck('chat:join', { conversationId: 42 }), { room: 'chat:42' })
      const err = await s.emitWithAck('chat:message', { conversationId: 42, text: ' ' })
      assert.equal(err.error.code, 'bad_request')
    })

    test('rooms joined by a handler; to(room).emit excludes the sender', async () => {
      const a = await client(srv.url, jwt('ann'))
      const b = await client(srv.url, jwt('ben'))
      await a.emitWithAck('chat:join', { conversationId: 7 })
      await b.emitWithAck('chat:join', { conversationId: 7 })
      const got = []
      a.on('chat:message', (m) => got.push(m))
      const atB = once(b, 'chat:message')
      assert.deepEqual(await a.emitWithAck('chat:message', { conversationId: 7, text: 'hi' }), { ok: true })
      const [m] = await atB
      assert.deepEqual(m, { room: 'chat:7', from: 'ann', text: 'hi' })
      // A marker published after it reaches a; the message before it did not.
      const marker = once(a, 'marker')
      await b.emitWithAck('publish', { topic: 'chat:7', event: 'marker', data: 1 })
      await marker
      assert.deepEqual(got, [])
    })

    test('rooms by the JWT topics claim, and the default join/publish events', async () => {
      const s = await client(srv.url, jwt('cid', { topics: ['news'] }))
      const headline = once(s, 'headline')
      const r = await srv.api('/api/v1/publish', { topic: 'news', event: 'headline', data: { n: 1 } })
      assert.equal(r.delivered, 1)
      assert.deepEqual(await headline, [{ n: 1 }])
      const t = await client(srv.url, jwt('dan'))
      assert.equal(await t.emitWithAck('join', 'lobby'), undefined)
      const hello = once(t, 'hello')
      await s.emitWithAck('publish', { topic: 'lobby', event: 'hello', data: 'world' })
      assert.deepEqual(await hello, ['world'])
    })

    test('a send to the user', async () => {
      const s = await client(srv.url, jwt('bob'))
      const dm = once(s, 'dm')
      const r = await srv.api('/api/v1/send', { users: ['bob'], event: 'dm', data: { text: 'psst' } })
      assert.equal(r.delivered, 1)
      assert.deepEqual(await dm, [{ text: 'psst' }])
    })

    test('namespaces: /chat connects, an unknown one gets "Invalid namespace"', async () => {
      const c = await client(srv.url + '/chat', jwt('eve'))
      assert.ok(c.connected)
      assert.deepEqual(await c.emitWithAck('chat:join', { conversationId: 'x' }), { room: 'chat:x' })
      const n = io(srv.url + '/nope', { ...seedOptions(jwt('eve')), forceNew: true })
      sockets.push(n)
      const [err] = await once(n, 'connect_error')
      assert.equal(err.message, 'Invalid namespace')
    })

    test('connect_error on a bad token', async () => {
      const s = io(srv.url, { ...seedOptions('not-a-token'), forceNew: true })
      sockets.push(s)
      const [err] = await once(s, 'connect_error')
      assert.match(err.message, /^unauthorized/)
      assert.equal(err.data.code, 'unauthorized')
      assert.equal(s.connected, false)
    })

    test('connection state recovery after a network cut: missed history events once, in order', async () => {
      const s = await client(srv.url, jwt('rex'))
      assert.equal(s.recovered, false)
      await s.emitWithAck('join', 'chat:rec')
      const got = []
      s.on('message', (d, offset) => got.push([d.n, offset]))
      await srv.api('/api/v1/publish', { topic: 'chat:rec', event: 'message', data: { n: 1 } })
      await until(() => got.length === 1, 'n=1')
      assert.match(got[0][1], /^1:[^:]+:chat:rec$/)
      const resume = await cut(srv, s, 'chat:rec')
      for (const n of [2, 3, 4]) await srv.api('/api/v1/publish', { topic: 'chat:rec', event: 'message', data: { n } })
      await resume()
      assert.equal(s.recovered, true)
      assert.deepEqual(got.map(([n]) => n), [1, 2, 3, 4])
      await srv.api('/api/v1/publish', { topic: 'chat:rec', event: 'message', data: { n: 5 } })
      await until(() => got.length === 5, 'n=5')
      assert.deepEqual(got.map(([n]) => n), [1, 2, 3, 4, 5], 'each once')
      assert.match(got[4][1], /^5:/)
    })

    test('recovery after a clean restart of the server (redb store)', async () => {
      const data = mkdtempSync(join(tmpdir(), 'ringhub-sio-redb-'))
      const opts = { port: await freePort(), extra: `[store]\nbackend = "redb"\npath = "${data}"\n` }
      let one = await startServer(ioMode, opts)
      try {
        const s = await connected(one.url, jwt('ria'))
        await s.emitWithAck('join', 'chat:restart')
        const got = []
        s.on('message', (d) => got.push(d.n))
        await one.api('/api/v1/publish', { topic: 'chat:restart', event: 'message', data: { n: 1 } })
        await until(() => got.length === 1, 'n=1')
        // Still connected when the server stops (SIGTERM): the shutdown keeps its session.
        s.io.reconnection(false)
        const gone = once(s, 'disconnect')
        await one.stop('SIGTERM')
        await gone
        one = await startServer(ioMode, opts)
        for (const n of [2, 3]) await one.api('/api/v1/publish', { topic: 'chat:restart', event: 'message', data: { n } })
        const back = once(s, 'connect')
        s.io.reconnection(true)
        s.connect()
        await back
        assert.equal(s.recovered, true)
        assert.deepEqual(got, [1, 2, 3])
        s.disconnect()
      } finally {
        await one.stop()
        rmSync(data, { recursive: true, force: true })
      }
    })

    test('recovery: a gap the history no longer covers is recovered === false', async () => {
      const s = await client(srv.url, jwt('sal'))
      await s.emitWithAck('join', 'tiny:1')
      const got = []
      s.on('message', (d) => got.push(d.n))
      await srv.api('/api/v1/publish', { topic: 'tiny:1', event: 'message', data: { n: 1 } })
      await until(() => got.length === 1, 'n=1')
      const resume = await cut(srv, s, 'tiny:1')
      // The room keeps two publications: 2 and 3 are gone by the time the client is back.
      for (const n of [2, 3, 4, 5]) await srv.api('/api/v1/publish', { topic: 'tiny:1', event: 'message', data: { n } })
      await resume()
      assert.equal(s.recovered, false)
      assert.deepEqual(got, [1])
    })

    test('emitWithAck from the server: a durable send acked by the client, written again when not', async () => {
      const s = await client(srv.url, jwt('una'))
      const notes = []
      s.on('note', (d, ack) => {
        notes.push(d.n)
        if (d.ack) ack('ok')
      })
      const m1 = await srv.api('/api/v1/send', { user: 'una', event: 'note', data: { n: 1, ack: true }, durable: true })
      await until(async () => (await srv.get(`/api/v1/messages/${m1.message_id}`)).status === 'acked', 'acked')
      const m2 = await srv.api('/api/v1/send', { user: 'una', event: 'note', data: { n: 2, ack: false }, durable: true })
      await until(() => notes.length === 2, 'n=2 delivered')
      assert.equal((await srv.get(`/api/v1/messages/${m2.message_id}`)).status, 'delivered')
      // Not acknowledged: the user's next connection gets it again, and its ack counts.
      s.disconnect()
      const t = io(srv.url, { ...seedOptions(jwt('una')), forceNew: true })
      sockets.push(t)
      const again = await new Promise((res) => t.once('note', (d, ack) => (ack(), res(d))))
      assert.deepEqual(again, { n: 2, ack: false })
      await until(async () => (await srv.get(`/api/v1/messages/${m2.message_id}`)).status === 'acked', 'acked after reconnect')
      assert.deepEqual(notes, [1, 2])
    })

    test('rooms per namespace: a room joined by a handler on /chat is emitted on /chat only', async () => {
      // One connection (one Manager), two namespaces.
      const m = new Manager(srv.url, { ...seedOptions(jwt('vic')), autoConnect: false })
      const root = m.socket('/', { auth: { token: jwt('vic') } })
      const chat = m.socket('/chat', { auth: { token: jwt('vic') } })
      sockets.push(root, chat)
      const up = Promise.all([once(root, 'connect'), once(chat, 'connect')])
      root.connect()
      chat.connect()
      await up
      const atRoot = []
      const atChat = []
      root.on('message', (d) => atRoot.push(d))
      chat.on('message', (d) => atChat.push(d))
      assert.deepEqual(await chat.emitWithAck('chat:join', { conversationId: 'ns' }), { room: 'chat:ns' })
      await srv.api('/api/v1/publish', { topic: 'chat:ns', event: 'message', data: 1 })
      await until(() => atChat.length === 1, 'on /chat')
      // Joined on / too: each namespace gets it once.
      await root.emitWithAck('join', 'chat:ns')
      await srv.api('/api/v1/publish', { topic: 'chat:ns', event: 'message', data: 2 })
      await until(() => atChat.length === 2 && atRoot.length === 1, 'on both')
      assert.deepEqual([atRoot, atChat], [[2], [1, 2]])
    })

    test('binary attachments both ways', async () => {
      const a = await client(srv.url, jwt('fay'))
      const b = await client(srv.url, jwt('gus'))
      await b.emitWithAck('join', 'files')
      const file = once(b, 'file')
      const body = Buffer.from([0, 1, 2, 250, 255])
      await a.emitWithAck('publish', { topic: 'files', event: 'file', data: { name: 'x.bin', body } })
      const [got] = await file
      assert.equal(got.name, 'x.bin')
      assert.deepEqual(Buffer.from(got.body), body)
    })
  })
}

// The client's default transports (long-polling first, then the upgrade to WebSocket) and
// long-polling alone: the same Socket.IO layer behind both (docs/PROTOCOL.md, "Engine.IO
// long-polling and the upgrade").
for (const ioMode of ['uring', 'epoll']) {
  describe(`socket.io-client over long-polling on --io ${ioMode}`, () => {
    let srv
    const sockets = []
    const client = async (token, transports) => {
      const s = await connected(srv.url, token, { transports })
      sockets.push(s)
      return s
    }
    before(async () => {
      srv = await startServer(ioMode)
    })
    after(async () => {
      sockets.forEach((s) => s.disconnect())
      await srv.stop()
    })

    test('default transports: polling, then the upgrade; nothing lost across it', async () => {
      const s = io(srv.url, { ...seedOptions(jwt('uma')), transports: undefined, forceNew: true })
      sockets.push(s)
      const opened = once(s.io, 'open').then(() => s.io.engine.transport.name)
      const upgraded = once(s.io, 'open').then(() => once(s.io.engine, 'upgrade'))
      await once(s, 'connect')
      assert.equal(await opened, 'polling', 'the session opens over polling')
      // Emits while the upgrade may be under way: every ack comes, in order.
      const acks = await Promise.all([1, 2, 3].map((n) => s.emitWithAck('chat:join', { conversationId: n })))
      assert.deepEqual(acks, [1, 2, 3].map((n) => ({ room: `chat:${n}` })))
      const [transport] = await upgraded
      assert.equal(transport.name, 'websocket')
      assert.equal(s.io.engine.transport.name, 'websocket')
      assert.deepEqual(await s.emitWithAck('chat:join', { conversationId: 4 }), { room: 'chat:4' })
    })

    test('polling only: emit with ack, rooms with a WebSocket peer, send to the user', async () => {
      const p = await client(jwt('pia'), ['polling'])
      const w = await client(jwt('wes'), ['websocket'])
      assert.equal(p.io.engine.transport.name, 'polling')
      assert.deepEqual(await p.emitWithAck('chat:join', { conversationId: 9 }), { room: 'chat:9' })
      await w.emitWithAck('chat:join', { conversationId: 9 })
      const atP = once(p, 'chat:message')
      assert.deepEqual(await w.emitWithAck('chat:message', { conversationId: 9, text: 'hi' }), { ok: true })
      assert.deepEqual((await atP)[0], { room: 'chat:9', from: 'wes', text: 'hi' })
      const atW = once(w, 'chat:message')
      await p.emitWithAck('chat:message', { conversationId: 9, text: 'yo' })
      assert.deepEqual((await atW)[0], { room: 'chat:9', from: 'pia', text: 'yo' })
      const dm = once(p, 'dm')
      const r = await srv.api('/api/v1/send', { users: ['pia'], event: 'dm', data: 1 })
      assert.equal(r.delivered, 1)
      assert.equal((await dm)[0], 1)
    })

    test('polling only: binary attachments both ways', async () => {
      const a = await client(jwt('ivy'), ['polling'])
      const b = await client(jwt('jon'), ['polling'])
      await b.emitWithAck('join', 'pfiles')
      const file = once(b, 'file')
      const body = Buffer.from([0, 1, 2, 250, 255])
      await a.emitWithAck('publish', { topic: 'pfiles', event: 'file', data: { name: 'y.bin', body } })
      const [got] = await file
      assert.equal(got.name, 'y.bin')
      assert.deepEqual(Buffer.from(got.body), body)
    })
  })
}
