// Browser tests of the built-in pages, driving Debian's Chromium with playwright-core.
// Run by scripts/browser-test.sh, which starts the server and sets:
//   RINGHUB_URL (http://127.0.0.1:PORT), RINGHUB_API_KEY, RINGHUB_IO (label), RINGHUB_LOADTEST.
// No fixed sleeps: every wait is for a DOM condition (page.waitForFunction) with a timeout.
import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { chromium } from 'playwright-core'

const BASE = process.env.RINGHUB_URL || 'http://127.0.0.1:8080'
const KEY = process.env.RINGHUB_API_KEY || ''
const IO = process.env.RINGHUB_IO || 'default'
const LOADTEST = process.env.RINGHUB_LOADTEST || 'target/release/ringhub-loadtest'
const OUT = process.env.BROWSER_OUT || 'target/browser'
const WAIT = { timeout: 15000 }
const uid = () => Math.random().toString(36).slice(2, 8)

let browser
const pageErrors = []

const api = async (method, path, body) => {
  const r = await fetch(BASE + path, {
    method,
    headers: { authorization: 'Bearer ' + KEY },
    body: body && JSON.stringify(body),
  })
  const j = await r.json()
  assert.ok(j.success, `${path}: ${JSON.stringify(j)}`)
  return j.data
}

before(async () => {
  mkdirSync(OUT, { recursive: true })
  // The server was just started: wait for it to answer.
  const deadline = Date.now() + 15000
  for (;;) {
    try {
      if ((await fetch(BASE + '/healthz')).ok) break
    } catch {}
    if (Date.now() > deadline) throw new Error(`no server at ${BASE}`)
    await new Promise((r) => setTimeout(r, 100))
  }
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

// A network the test can cut for one context. `context.setOffline` alone leaves open WebSockets
// alone in Chromium, so the page's sockets go through Playwright (routeWebSocket), which
// forwards to the server while the network is up; `cut()` closes them (both sides) and goes
// offline, so reconnect attempts fail until `restore()`.
async function cuttable(ctx) {
  const net = { up: true, open: new Set() }
  await ctx.routeWebSocket(/\/ws(\?|$)/, (ws) => {
    if (!net.up) return ws.close({ code: 1001, reason: 'network down' })
    const server = ws.connectToServer()
    const pair = { ws, server }
    net.open.add(pair)
    ws.onClose(() => net.open.delete(pair))
    server.onClose(() => net.open.delete(pair))
  })
  net.cut = async () => {
    net.up = false
    await ctx.setOffline(true)
    for (const { ws, server } of [...net.open]) {
      await server.close().catch(() => {})
      await ws.close({ code: 1001, reason: 'network down' }).catch(() => {})
    }
    net.open.clear()
  }
  net.restore = async () => {
    await ctx.setOffline(false)
    net.up = true
  }
  return net
}

async function openChat(name, room, o = {}) {
  const ctx = await browser.newContext({ viewport: o.viewport || { width: 1000, height: 700 } })
  if (o.cuttable) ctx.net = await cuttable(ctx)
  const page = await ctx.newPage()
  page.on('pageerror', (e) => pageErrors.push(`${name}: ${e.message}`))
  await page.goto(BASE + '/')
  await page.fill('#name', name)
  await page.fill('#room', room)
  await page.click('#join button')
  await page.waitForFunction(() => !document.querySelector('#text').disabled, null, WAIT)
  return { ctx, page }
}

const presenceCount = (page, n) =>
  page.waitForFunction((n) => document.querySelectorAll('#presence li').length === n, n, WAIT)

const texts = (page) =>
  page.$$eval('#messages li:not(.system)', (lis) =>
    lis.map((li) => ({ text: li.querySelector('.text').textContent, offset: Number(li.dataset.offset) })),
  )

async function say(page, text) {
  await page.fill('#text', text)
  await page.press('#text', 'Enter')
}

test('chat: two pages talk, see each other in presence, and see typing', async () => {
  const room = 'a' + uid()
  const alice = await openChat('alice', room)
  const bob = await openChat('bob', room)
  try {
    await presenceCount(alice.page, 2)
    await presenceCount(bob.page, 2)
    // Names arrive with the `here` announcements: both pages show both names.
    for (const { page } of [alice, bob])
      await page.waitForFunction(
        () => /alice/.test(document.querySelector('#presence').textContent) && /bob/.test(document.querySelector('#presence').textContent),
        null,
        WAIT,
      )
    // String client ids, the same in presence as on the page itself.
    const me = await alice.page.textContent('#me-client')
    assert.match(me, /^[A-Za-z0-9_-]+\.[0-9a-f]+$/)
    const listed = await bob.page.$$eval('#presence li', (lis) => lis.map((li) => li.dataset.client))
    assert.ok(listed.includes(me), `${me} in ${listed}`)

    await alice.page.type('#text', 'hel')
    await bob.page.waitForFunction(() => document.querySelector('#typing').textContent.includes('alice is typing'), null, WAIT)
    assert.equal(await alice.page.textContent('#typing'), '', 'typing is not echoed to the sender')
    await alice.page.fill('#text', '')
    await say(alice.page, 'hello bob')
    await bob.page.waitForFunction(
      () => [...document.querySelectorAll('#messages .text')].some((e) => e.textContent === 'hello bob'),
      null,
      WAIT,
    )
    await bob.page.waitForFunction(() => document.querySelector('#typing').textContent === '', null, WAIT)
    await say(bob.page, 'hi alice')
    await alice.page.waitForFunction(
      () => [...document.querySelectorAll('#messages .text')].some((e) => e.textContent === 'hi alice'),
      null,
      WAIT,
    )
    assert.deepEqual((await texts(alice.page)).map((m) => m.text), ['hello bob', 'hi alice'])
    await alice.page.screenshot({ path: `${OUT}/chat-alice-${IO}.png` })
    await bob.page.screenshot({ path: `${OUT}/chat-bob-${IO}.png` })

    // A third page joining later gets the room's history.
    const carol = await openChat('carol', room)
    await carol.page.waitForFunction(() => document.querySelectorAll('#messages li:not(.system)').length === 2, null, WAIT)
    assert.deepEqual((await texts(carol.page)).map((m) => m.text), ['hello bob', 'hi alice'])
    await presenceCount(alice.page, 3)
    await carol.ctx.close()
    await presenceCount(alice.page, 2)
  } finally {
    await alice.ctx.close()
    await bob.ctx.close()
  }
})

test('chat: usable on a 390 px phone, other events in words, a favicon', async () => {
  const room = 'p' + uid()
  const missing = []
  const ctx0 = { viewport: { width: 390, height: 800 } }
  const phone = await openChat('pat', room, ctx0)
  const { page } = phone
  page.on('response', (r) => r.status() === 404 && missing.push(r.url()))
  try {
    // Nothing wider than the screen; the message box and Send inside it.
    const box = await page.evaluate(() => {
      const r = (sel) => document.querySelector(sel).getBoundingClientRect()
      return { sw: document.documentElement.scrollWidth, vw: innerWidth, vh: innerHeight, send: r('#send-btn'), text: r('#text') }
    })
    assert.ok(box.sw <= box.vw, `page ${box.sw} px wide in a ${box.vw} px viewport`)
    for (const k of ['send', 'text']) {
      const b = box[k]
      assert.ok(b.left >= 0 && b.right <= box.vw && b.top >= 0 && b.bottom <= box.vh, `${k} off-screen: ${JSON.stringify(b)}`)
    }
    await say(page, 'from my phone')
    await page.waitForFunction(() => document.querySelector('#messages').textContent.includes('from my phone'), null, WAIT)
    // An event that is not a chat message (here from the API): its name and its data in words.
    await api('POST', '/api/v1/publish', { topic: 'chat:' + room, event: 'notice', data: { text: 'maintenance at 5', level: 'info' } })
    await page.waitForFunction(() => document.querySelector('#messages li.event'), null, WAIT)
    const shown = await page.textContent('#messages li.event')
    assert.match(shown, /^notice\s*maintenance at 5 \(level: info\)/)
    assert.ok(!shown.includes('{'), `raw JSON shown: ${shown}`)
    await page.screenshot({ path: `${OUT}/chat-390-${IO}.png` })
    // The icon is inline (the CSP allows data: images): no request for /favicon.ico.
    const icon = await page.$eval('link[rel=icon]', (l) => l.href)
    assert.ok(icon.startsWith('data:image/svg+xml,'), icon)
    await page.reload()
    await page.waitForLoadState('load')
    assert.deepEqual(missing, [])
  } finally {
    await phone.ctx.close()
  }
})

test('chat: a page that was offline recovers the missed messages in order, once', async () => {
  const room = 'b' + uid()
  const N = 20
  const away = await openChat('away', room, { cuttable: true })
  const here = await openChat('here', room)
  try {
    await presenceCount(away.page, 2)
    await say(away.page, 'before')
    await here.page.waitForFunction(() => document.querySelectorAll('#messages li:not(.system)').length === 1, null, WAIT)

    await away.ctx.net.cut()
    // The network is gone: the client notices (its socket errors) and starts reconnecting.
    await away.page.waitForFunction(() => document.querySelector('#status').dataset.state !== 'connected', null, WAIT)
    await presenceCount(here.page, 1)
    for (let i = 0; i < N; i++) await say(here.page, `missed-${i}`)
    await here.page.waitForFunction((n) => document.querySelectorAll('#messages li:not(.system)').length === n + 1, N, WAIT)

    const t0 = Date.now()
    await away.ctx.net.restore()
    await away.page.waitForFunction(() => document.querySelector('#status').dataset.state === 'connected', null, WAIT)
    const reconnected = Date.now() - t0
    await away.page.waitForFunction(
      (n) => [...document.querySelectorAll('#messages .text')].filter((e) => e.textContent.startsWith('missed-')).length >= n,
      N,
      WAIT,
    )
    const recovered = Date.now() - t0
    const got = await texts(away.page)
    assert.deepEqual(
      got.map((m) => m.text),
      ['before', ...Array.from({ length: N }, (_, i) => `missed-${i}`)],
      'every missed message, in order, once',
    )
    const offsets = got.map((m) => m.offset)
    assert.ok(offsets.every((o, i) => i === 0 || o > offsets[i - 1]), `offsets increase: ${offsets}`)
    // Back in presence, under a new client id.
    await presenceCount(here.page, 2)
    const line = `recovery (${IO}): ${N} missed messages shown ${recovered} ms after the network came back (reconnected after ${reconnected} ms; client backoff 250 ms doubling to 2 s, full jitter)`
    console.log('# ' + line)
    writeFileSync(`${OUT}/recovery-${IO}.txt`, line + '\n')
    await away.page.screenshot({ path: `${OUT}/chat-recovered-${IO}.png` })
  } finally {
    await away.ctx.close()
    await here.ctx.close()
  }
})

// Columns of the rate chart's canvas with a series colour in its top half: none while the lines
// lie near zero (the axis goes to at least 100 msgs/s), many once they climb. An expression
// evaluated in the page.
const CHART_HIGH = `(() => {
  const c = document.querySelector('#chart-rate canvas')
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height / 2).data
  const colours = [[37, 99, 235], [220, 38, 38]] // shard 0, shard 1
  const cols = new Set()
  for (let i = 0; i < d.length; i += 4)
    if (d[i + 3] > 200 && colours.some(([r, g, b]) => Math.abs(d[i] - r) + Math.abs(d[i + 1] - g) + Math.abs(d[i + 2] - b) < 60))
      cols.add((i / 4) % c.width)
  return cols.size
})()`

test('admin: the dashboard follows the server under load', async () => {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 1000 } })
  const page = await ctx.newPage()
  page.on('pageerror', (e) => pageErrors.push(`admin: ${e.message}`))
  try {
    await page.goto(BASE + '/admin')
    await page.fill('#key', 'wrong')
    await page.click('#login button')
    await page.waitForFunction(() => document.querySelector('#login-error').textContent !== '', null, WAIT)
    await page.fill('#key', KEY)
    await page.click('#login button')
    await page.waitForFunction(() => !document.querySelector('#dash').hidden, null, WAIT)
    assert.equal(await page.evaluate(() => sessionStorage.getItem('ringhub-admin-key')), KEY)

    // A chat page is connected: the count on the page is the server's.
    const chat = await openChat('watcher', 'c' + uid())
    const K = (await api('GET', '/api/v1/stats')).total.connections
    assert.ok(K >= 1)
    await page.waitForFunction((k) => document.querySelector('#connections').textContent === String(k), K, WAIT)
    await page.waitForFunction(() => Number(document.querySelector('#chart-rate').dataset.points) >= 3, null, WAIT)
    const idleHigh = await page.evaluate(CHART_HIGH)

    // Load: S subscribers of one topic, one publisher at R msgs/s.
    const S = 40
    const port = new URL(BASE).port
    const lt = spawn(
      LOADTEST,
      ['fanout', '--target', `127.0.0.1:${port}`, '--subscribers', String(S), '--topics', '1', '--rate', '400', '--duration', '8', '--warmup', '1'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    )
    let ltOut = ''
    lt.stdout.on('data', (d) => (ltOut += d))
    lt.stderr.on('data', (d) => (ltOut += d))
    const ltDone = new Promise((res) => lt.on('exit', (code) => res(code)))

    await page.waitForFunction((n) => Number(document.querySelector('#connections').textContent) >= n, K + S, WAIT)
    await page.waitForFunction(() => Number(document.querySelector('#rate-out').textContent) > 2000, null, WAIT)
    await page.waitForFunction(
      () => [...document.querySelectorAll('#topics tr')].some((tr) => tr.dataset.topic === 't0' && Number(tr.lastChild.textContent) >= 40),
      null,
      WAIT,
    )
    // The chart moved: its lines climbed into the top half of the plot, where they were not.
    await page.waitForFunction(CHART_HIGH + ' >= 20', null, WAIT)
    const shown = await page.evaluate(() => Number(document.querySelector('#chart-rate').dataset.points))
    await page.waitForFunction((n) => Number(document.querySelector('#chart-rate').dataset.points) >= n, shown + 3, WAIT)
    const high = await page.evaluate(CHART_HIGH)
    assert.ok(high >= 20 && idleHigh <= 5, `chart columns in the top half: ${idleHigh} idle, ${high} under load`)
    await page.screenshot({ path: `${OUT}/admin-${IO}.png`, fullPage: true })

    // Presence of the chat page's room, and a publication from the form, seen by the chat page.
    const room = await chat.page.textContent('#room-name')
    await page.fill('#presence-topic', 'chat:' + room)
    await page.click('#presence-form button')
    await page.waitForFunction(() => document.querySelectorAll('#presence li').length === 1, null, WAIT)
    await page.fill('#pub-topic', 'chat:' + room)
    await page.fill('#pub-data', '{"name": "admin", "text": "from the dashboard"}')
    await page.click('#publish button')
    await page.waitForFunction(() => /delivered to 1, offset \d+/.test(document.querySelector('#pub-result').textContent), null, WAIT)
    await chat.page.waitForFunction(
      () => [...document.querySelectorAll('#messages .text')].some((e) => e.textContent === 'from the dashboard'),
      null,
      WAIT,
    )

    // An error reply shows in the recent events.
    await chat.page.evaluate(() => window.ringhubChat.client.publish('bad*topic', 'x').catch(() => {}))
    await page.waitForFunction(
      () => [...document.querySelectorAll('#events li')].some((li) => li.textContent.includes('bad_request')),
      null,
      WAIT,
    )

    assert.equal(await ltDone, 0, ltOut)
    // The load is gone: the count comes back down.
    await page.waitForFunction((k) => document.querySelector('#connections').textContent === String(k), K, WAIT)
    await chat.ctx.close()
  } finally {
    await ctx.close()
  }
})

test('permessage-deflate: Chromium negotiates it, and compressed and plain messages flow', async () => {
  const ctx = await browser.newContext()
  try {
    const page = await ctx.newPage()
    page.on('pageerror', (e) => pageErrors.push(`deflate: ${e.message}`))
    await page.goto(BASE + '/')
    const topic = 'deflate' + uid()
    const got = await page.evaluate(async (topic) => {
      const url = location.origin.replace(/^http/, 'ws') + '/ws'
      const open = () =>
        new Promise((resolve, reject) => {
          const ws = new WebSocket(url)
          ws.onopen = () => resolve(ws)
          ws.onerror = () => reject(new Error('WebSocket failed'))
        })
      const next = (ws, pred) =>
        new Promise((resolve) => {
          const on = (e) => {
            const m = JSON.parse(e.data)
            if (pred(m)) {
              ws.removeEventListener('message', on)
              resolve(m)
            }
          }
          ws.addEventListener('message', on)
        })
      const [sub, pub] = [await open(), await open()]
      let wait = next(sub, (m) => m.event === 'reply' && m.id === 1)
      sub.send(JSON.stringify({ event: 'subscribe', topic, id: 1 }))
      await wait
      // Over the compression threshold (sent compressed), then under it (sent plain).
      const long = 'compressible chat text, said again and again. '.repeat(100)
      const out = []
      for (const text of [long, 'hi']) {
        wait = next(sub, (m) => m.event === 'say')
        pub.send(JSON.stringify({ event: 'say', topic, data: { text } }))
        out.push((await wait).data.text === text)
      }
      sub.close()
      pub.close()
      return { extensions: [sub.extensions, pub.extensions], delivered: out }
    }, topic)
    for (const ext of got.extensions) assert.match(ext, /^permessage-deflate/, `negotiated: ${ext}`)
    assert.deepEqual(got.delivered, [true, true])
  } finally {
    await ctx.close()
  }
})
