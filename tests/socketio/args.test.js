// Argument lists (docs/PROTOCOL.md, "One model, two wire protocols"): socket.io-client 4.8,
// unchanged from npm, against examples/socketio_protocol_suite.rs (the reference application of
// Socket.IO's protocol test suite, written with ringhub's handlers), on WebSocket and on
// long-polling. A multi-argument emit reaches a handler with every argument (one array argument
// stays one), a handler answers an ack with several arguments and emits several arguments,
// binary ones included, on the namespace of the event it handles.
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { io } from 'socket.io-client'
import { startExample } from './example.js'

const startServer = () => startExample('socketio_protocol_suite', 'RINGHUB_SIO_SUITE_BIN')

const once = (s, ev) => new Promise((res) => s.once(ev, (...a) => res(a)))

/** A connected socket and the arguments of the `auth` event the server emits at connection. */
async function connect(url, opts) {
  const s = io(url, { ...opts, forceNew: true, autoConnect: false, reconnection: false })
  const auth = once(s, 'auth')
  s.connect()
  const [err] = await Promise.race([once(s, 'connect').then(() => [null]), once(s, 'connect_error')])
  if (err) throw err
  return { s, auth: await auth }
}

for (const transports of [['websocket'], ['polling']]) {
  describe(`argument lists over ${transports[0]}`, () => {
    let srv
    const sockets = []
    const client = async (path, opts = {}) => {
      const c = await connect(srv.url + path, { transports, ...opts })
      sockets.push(c.s)
      return c
    }
    before(async () => {
      srv = await startServer()
    })
    after(async () => {
      sockets.forEach((s) => s.disconnect())
      await srv.stop()
    })

    test('a handler emits at connection, on each namespace, with the auth payload', async () => {
      const { auth } = await client('/', { auth: { token: '123' } })
      assert.deepEqual(auth, [{ token: '123' }])
      const custom = await client('/custom')
      assert.deepEqual(custom.auth, [{}])
    })

    test('every argument reaches the handler and comes back as several arguments', async () => {
      const { s } = await client('/')
      const back = once(s, 'message-back')
      s.emit('message', 1, '2', { 3: [true] }, null)
      assert.deepEqual(await back, [1, '2', { 3: [true] }, null])
      // One array argument is one argument, not a list.
      const one = once(s, 'message-back')
      s.emit('message', [1, '2'])
      assert.deepEqual(await one, [[1, '2']])
      const none = once(s, 'message-back')
      s.emit('message')
      assert.deepEqual(await none, [])
    })

    test('an ack is answered with several arguments (Node-style err, result)', async () => {
      const { s } = await client('/')
      const args = await new Promise((res) => s.emit('message-with-ack', null, { ok: 5 }, (...a) => res(a)))
      assert.deepEqual(args, [null, { ok: 5 }])
      const arr = await new Promise((res) => s.emit('message-with-ack', [1, 2], (...a) => res(a)))
      assert.deepEqual(arr, [[1, 2]])
    })

    test('binary arguments travel as attachments both ways', async () => {
      const { s } = await client('/')
      const back = once(s, 'message-back')
      s.emit('message', Buffer.from([1, 2, 3]), 'x', { b: Buffer.from([4, 5, 6]) })
      const got = await back
      assert.equal(got.length, 3)
      assert.deepEqual(Buffer.from(got[0]), Buffer.from([1, 2, 3]))
      assert.equal(got[1], 'x')
      assert.deepEqual(Buffer.from(got[2].b), Buffer.from([4, 5, 6]))
      const acked = await new Promise((res) => s.emit('message-with-ack', Buffer.from([7]), 8, (...a) => res(a)))
      assert.deepEqual([Buffer.from(acked[0]), acked[1]], [Buffer.from([7]), 8])
    })

    test("a handler's emit goes to the namespace of the event it handles", async () => {
      const main = await client('/')
      // The same connection: a second namespace on the first socket's Manager.
      const custom = main.s.io.socket('/custom')
      const auth = once(custom, 'auth')
      custom.connect()
      await auth
      sockets.push(custom)
      const onCustom = []
      const onMain = []
      custom.on('message-back', (...a) => onCustom.push(a))
      main.s.on('message-back', (...a) => onMain.push(a))
      custom.emit('message', 'to custom', 2)
      // Answered in order on the one connection: once `/` has its answer, `/custom` has had its.
      const mainBack = once(main.s, 'message-back')
      main.s.emit('message', 'to main')
      await mainBack
      assert.deepEqual(onMain, [['to main']])
      assert.deepEqual(onCustom, [['to custom', 2]])
    })
  })
}
