// Reconnects across server deaths: each test owns its server process.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { connect } from '../src/index.js'
import { Server, next, until, states, FAST, freePort, hasHistory } from './helpers.js'

test('reconnect after the server is killed and restarted on the same port; resubscribes', async () => {
  const srv = await Server.start()
  const c = connect(srv.url, { reconnect: FAST })
  const errors = []
  c.on('error', (e) => errors.push(e))
  try {
    const history = await next(c, 'state', (s) => s === 'connected').then(() => hasHistory(c))
    const seen = []
    const sub = c.subscribe('chat:restart', (m) => seen.push(m))
    await sub.ready
    await c.publish('chat:restart', 'm', 'before')
    await until(() => seen.length === 1)
    const st = states(c)
    const down = next(c, 'state', (s) => s === 'reconnecting')
    await srv.kill()
    await down
    // A few refused attempts while the server is down.
    await until(() => st.filter((s) => s === 'reconnecting').length >= 1 && errors.length >= 1, 10000, 'refused attempts')
    const resub = next(sub, 'subscribed')
    const outcome = history ? next(sub, 'recovered').catch(() => null) : null
    const failed = history ? next(sub, 'recovery_failed').catch(() => null) : null
    await srv.restart()
    await resub
    assert.equal(c.state, 'connected')
    assert.deepEqual(st.slice(0, 2), ['disconnected', 'reconnecting'])
    assert.equal(st.at(-1), 'connected')
    assert.ok(!st.includes('closed'))
    if (history) {
      // redb keeps the epoch (recovered); the memory store starts a new one (recovery_failed).
      const r = await Promise.race([outcome, failed])
      assert.ok(r && r.epoch != null, 'recovered or recovery_failed emitted')
    }
    // The resubscription is live: a publication made now (offsets may have restarted) arrives.
    const got = next(sub, 'publication', (m) => m.data === 'after')
    const r = await srv.api('POST', '/api/v1/publish', { topic: 'chat:restart', event: 'm', data: 'after' })
    assert.equal(r.body.data.delivered, 1)
    await got
  } finally {
    c.close()
    await srv.stop()
  }
})

test('refused connection at first (server not running yet) still reconnects', async () => {
  const port = await freePort()
  const c = connect(`ws://127.0.0.1:${port}/ws`, { reconnect: FAST })
  const st = states(c)
  const errors = []
  c.on('error', (e) => errors.push(e))
  const sub = c.subscribe('room:late')
  const p = c.publish('room:late', 'e', 'queued')
  let srv
  try {
    // Several attempts fail: Node fires only `error` for a refused connection.
    await until(() => errors.length >= 3, 10000, 'three refused attempts')
    assert.equal(st[0], 'connecting')
    assert.equal(st[1], 'reconnecting')
    srv = await Server.start(port)
    const d = await sub.ready
    assert.equal(c.state, 'connected')
    assert.equal(st.at(-1), 'connected')
    await p
    assert.ok(d === undefined || typeof d === 'object')
  } finally {
    c.close()
    if (srv) await srv.stop()
  }
})

test('backoff grows exponentially up to maxDelay (no jitter)', async () => {
  const port = await freePort()
  const times = []
  const c = connect(`ws://127.0.0.1:${port}/ws`, {
    reconnect: { initialDelay: 40, maxDelay: 160, factor: 2, jitter: 'none' },
    getToken: () => (times.push(Date.now()), null),
  })
  c.on('error', () => {})
  try {
    await until(() => times.length >= 6, 10000, 'six attempts')
  } finally {
    c.close()
  }
  const gaps = times.slice(1).map((t, i) => t - times[i])
  // 40, 80, 160, 160, 160 (plus connect time): each at least its delay, none far beyond the cap.
  const want = [40, 80, 160, 160, 160]
  gaps.slice(0, 5).forEach((g, i) => assert.ok(g >= want[i] - 5 && g < want[i] + 400, `gap ${i}: ${g} ms`))
})
