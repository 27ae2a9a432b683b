// socket.io-client 4.8 (its browser bundle, from tests/socketio's npm lock) in Debian's Chromium
// against the server's /socket.io/: the default transports (long-polling, then the upgrade to
// WebSocket), long-polling only, and WebSocket only. Run by scripts/browser-test.sh, which
// starts the server (anonymous clients, the pub/sub handler) and sets RINGHUB_URL,
// RINGHUB_API_KEY and RINGHUB_IO.
// No fixed sleeps: every wait is for an event in the page, bounded by the test's timeout.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'

const BASE = process.env.RINGHUB_URL || 'http://127.0.0.1:8080'
const KEY = process.env.RINGHUB_API_KEY || ''
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..')
const BUNDLE = join(ROOT, 'tests/socketio/node_modules/socket.io-client/dist/socket.io.min.js')
const uid = () => Math.random().toString(36).slice(2, 8)

let browser
const pageErrors = []

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  })
})

after(async () => {
  await browser?.close()
  assert.deepEqual(pageErrors, [], 'uncaught errors in the pages')
})

const publish = async (topic, event, data) => {
  const r = await fetch(BASE + '/api/v1/publish', {
    method: 'POST',
    headers: { authorization: 'Bearer ' + KEY, 'content-type': 'application/json' },
    body: JSON.stringify({ topic, event, data }),
  })
  const j = await r.json()
  assert.ok(j.success, JSON.stringify(j))
  return j.data
}

for (const [label, transports] of [
  ['default transports (polling, then the upgrade)', undefined],
  ['long-polling only', ['polling']],
  ['WebSocket only', ['websocket']],
]) {
  test(`socket.io-client in Chromium, ${label}: connect, ack, room, publication`, async () => {
    const page = await browser.newPage()
    page.on('pageerror', (e) => pageErrors.push(`${label}: ${e.message}`))
    // Same origin as the server: a page it serves, then the client's bundle.
    await page.goto(BASE + '/healthz')
    await page.addScriptTag({ path: BUNDLE })
    const room = `browser-${uid()}`
    const first = await page.evaluate(
      async ({ transports, room }) => {
        const opts = { forceNew: true, reconnection: false }
        if (transports) opts.transports = transports
        const s = io(location.origin, opts)
        window.sock = s
        const opened = new Promise((res) => s.io.once('open', () => res(s.io.engine.transport.name)))
        await new Promise((res, rej) => {
          s.once('connect', res)
          s.once('connect_error', rej)
        })
        const joined = await s.emitWithAck('join', room)
        window.news = new Promise((res) => s.once('news', res))
        return { opened: await opened, joined: joined ?? null, id: s.id }
      },
      { transports, room },
    )
    assert.equal(first.joined, null, 'join acked without an error')
    assert.ok(first.id)
    assert.equal(first.opened, transports ? transports[0] : 'polling')
    // A publication from the HTTP API reaches the page.
    const r = await publish(room, 'news', { n: 1 })
    assert.equal(r.delivered, 1)
    assert.deepEqual(await page.evaluate(() => window.news), { n: 1 })
    // A client publication with an ack, received by the page itself; then the transport.
    const last = await page.evaluate(
      async ({ room }) => {
        const s = window.sock
        const echo = new Promise((res) => s.once('echo', res))
        const acked = await s.emitWithAck('publish', { topic: room, event: 'echo', data: 'hi' })
        const got = await echo
        if (s.io.engine.transport.name !== 'websocket' && s.io.engine.upgrades?.length) {
          await new Promise((res) => s.io.engine.once('upgrade', res))
        }
        const transport = s.io.engine.transport.name
        s.disconnect()
        return { acked: acked ?? null, got, transport }
      },
      { room },
    )
    assert.equal(last.got, 'hi')
    assert.equal(last.transport, transports && transports.length === 1 ? transports[0] : 'websocket')
    await page.close()
  })
}
