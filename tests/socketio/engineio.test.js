// The bare Engine.IO endpoint (docs/PROTOCOL.md, "Bare Engine.IO clients"): engine.io-client 6,
// unchanged from npm, against examples/engineio_protocol_suite.rs (`/engine.io/`, every message
// echoed by a handler), on its default transports (polling, then the upgrade to WebSocket), on
// WebSocket alone and on polling alone. Text and binary messages come back as they went.
import { test, describe, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join, dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as delay } from 'node:timers/promises'
import { Socket } from 'engine.io-client'
import { freePort } from '../../clients/js/test/helpers.js'

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..')

function exampleBin() {
  if (process.env.RINGHUB_EIO_SUITE_BIN) return process.env.RINGHUB_EIO_SUITE_BIN
  const t = process.env.CARGO_TARGET_DIR || join(ROOT, 'target')
  const p = join(t, 'debug', 'examples', 'engineio_protocol_suite')
  if (!existsSync(p)) throw new Error(`no example server at ${p}: run cargo build --example engineio_protocol_suite`)
  return p
}

async function startServer() {
  const port = await freePort()
  const proc = spawn(exampleBin(), [`127.0.0.1:${port}`], { stdio: ['ignore', 'ignore', 'pipe'] })
  let log = ''
  proc.stderr.on('data', (d) => (log += d))
  let exited = false
  const exit = new Promise((r) => proc.on('exit', () => ((exited = true), r())))
  const url = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 20000
  for (;;) {
    if (exited) throw new Error(`server exited at start: ${log}`)
    try {
      if ((await fetch(url + '/healthz')).ok) break
    } catch {}
    if (Date.now() > deadline) throw new Error(`server not healthy: ${log}`)
    await delay(25) // polling interval of the readiness probe
  }
  return {
    url,
    async stop() {
      proc.kill('SIGKILL')
      await exit
    },
  }
}

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
