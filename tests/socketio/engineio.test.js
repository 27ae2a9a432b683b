// The bare Engine.IO endpoint (docs/PROTOCOL.md, "Bare Engine.IO clients"): engine.io-client 6,
// unchanged from npm, against examples/engineio_protocol_suite.rs (`/engine.io/`, every message
// echoed by a handler), on its default transports (polling, then the upgrade to WebSocket), on
// WebSocket alone and on polling alone. Text and binary messages come back as they went.
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Socket } from 'engine.io-client'
import { startExample } from './example.js'

const startServer = () => startExample('engineio_protocol_suite', 'RINGHUB_EIO_SUITE_BIN')

const once = (s, ev) => new Promise((res) => s.once(ev, (...a) => res(a)))

/** Sends `data` and waits for the next message. */
async function echo(s, data) {
  const back = once(s, 'message')
  s.send(data)
  return (await back)[0]
}

/** A text and a binary message, each back as it went. */
async function roundTrip(s) {
  assert.equal(await echo(s, 'hello ✓'), 'hello ✓')
  assert.equal(await echo(s, '{"not":"parsed"}'), '{"not":"parsed"}')
  const bytes = await echo(s, Uint8Array.from([1, 2, 3, 255]))
  assert.deepEqual(Buffer.from(bytes), Buffer.from([1, 2, 3, 255]))
}

for (const transports of [undefined, ['websocket'], ['polling']]) {
  const name = transports ? transports[0] : 'polling upgraded to websocket'
  describe(`bare Engine.IO over ${name}`, () => {
    let srv
    let s
    before(async () => {
      srv = await startServer()
    })
    after(async () => {
      s?.close()
      await srv.stop()
    })

    test('messages come back as they went', async () => {
      s = new Socket(srv.url, { path: '/engine.io/', transports })
      // The default transports upgrade: wait for it, so the messages go over the WebSocket.
      const ready = transports ? once(s, 'open') : once(s, 'upgrade')
      await ready
      assert.equal(s.transport.name, transports ? transports[0] : 'websocket')
      await roundTrip(s)
    })
  })
}
