// Reconnects across server deaths: each test owns its server process.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { connect } from '../src/index.js'
import { Server, MEMORY, next, until, states, FAST, freePort, hasHistory } from './helpers.js'

test('reconnect after the server is killed and restarted on the same port; resubscribes and recovers', async () => {
  const srv = await Server.start()
  let gate = null
  const c = connect(srv.url, { reconnect: FAST, getToken: async () => (await gate, null) })
  const errors = []
  c.on('error', (e) => errors.push(e))
  try {
    const history = await next(c, 'state', (s) => s === 'connected').then(() => hasHistory(c))
    const seen = []
    const sub = c.subscribe('chat:restart', (m) => seen.push(m.data))
    await sub.ready
    await c.publish('chat:restart', 'm', 'before')
    await until(() => seen.length === 1)
    const st = states(c)
    const down = next(c, 'state', (s) => s === 'reconnecting')
    await srv.kill()
    await down
    // Refused attempts while the server is down (Node reports them with `error` only).
    await until(() => errors.length >= 2, 10000, 'refused attempts')
    let release
    gate = new Promise((r) => (release = r))
    await srv.restart()
    // Published while the client is still away: recovered on resubscribe when the store kept
    // the stream (redb), else the client is told recovery failed.
    const r0 = await srv.api('POST', '/api/v1/publish', { topic: 'chat:restart', event: 'm', data: 'during' })
    assert.equal(r0.status, 200)
    const resub = next(sub, 'subscribed')
    const recovered = next(sub, 'recovered').catch(() => null)
    const failed = next(sub, 'recovery_failed').catch(() => null)
    release()
    await resub
    assert.equal(c.state, 'connected')
    assert.deepEqual(st.slice(0, 2), ['disconnected', 'reconnecting'])
    assert.equal(st.at(-1), 'connected')
    assert.ok(!st.includes('closed'))
    if (history && srv.variant.store) {
      assert.ok(await recovered, 'recovered after kill -9 with the redb store')
      assert.deepEqual(seen, ['before', 'during'])
    } else if (history) {
      assert.ok(await failed, 'recovery_failed with a store that lost the stream')
    }
    // The resubscription is live (even if offsets restarted with a new epoch).
    const got = next(sub, 'publication', (m) => m.data === 'after')
    const r = await srv.api('POST', '/api/v1/publish', { topic: 'chat:restart', event: 'm', data: 'after' })
    assert.equal(r.body.data.delivered, 1)
    await got
    assert.equal(seen.at(-1), 'after')
  } finally {
    c.close()
    await srv.stop()
  }
})

test('restart with a memory store: new epoch, recovery_failed, restarted offsets still delivered', async (t) => {
  let srv
  try {
    srv = await Server.start(0, MEMORY)
  } catch (e) {
    return t.skip('server refuses [[topics]] / [store] settings: ' + e.message.split('\n')[0].slice(0, 120))
  }
  const c = connect(srv.url, { reconnect: FAST })
  c.on('error', () => {})
  try {
    await next(c, 'state', (s) => s === 'connected')
    if (!(await hasHistory(c))) return t.skip('server keeps no history on chat:*')
    const seen = []
    const sub = c.subscribe('chat:mem', (m) => seen.push(m))
    await sub.ready
    for (let i = 0; i < 5; i++) await c.publish('chat:mem', 'm', i)
    await until(() => seen.length === 5)
    const epoch = sub.epoch
    assert.equal(sub.offset, seen[4].offset)
    const down = next(c, 'state', (s) => s === 'reconnecting')
    await srv.kill()
    await down
    const failed = next(sub, 'recovery_failed')
    await srv.restart()
    const d = await failed
    assert.notEqual(d.epoch, epoch)
    assert.equal(sub.epoch, d.epoch)
    // Offsets start again at 1, below the last delivered of the old epoch: still delivered.
    await c.publish('chat:mem', 'm', 'new')
    await until(() => seen.length === 6)
    assert.equal(seen[5].data, 'new')
    assert.equal(seen[5].offset, d.offset + 1)
    assert.ok(seen[5].offset <= seen[4].offset)
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
