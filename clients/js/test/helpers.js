// Test harness: a real ringhub server as a child process, JWTs, and event helpers.
import { spawn } from 'node:child_process'
import { createServer } from 'node:net'
import { mkdtempSync, writeFileSync, rmSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createHmac } from 'node:crypto'
import { setTimeout as delay } from 'node:timers/promises'

export const API_KEY = 'test-api-key-0123456789'
export const SECRET = 'test-jwt-secret-0123456789-0123456789'
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..')

/** The server binary: $RINGHUB_BIN, else the debug build under $CARGO_TARGET_DIR or target/. */
export function serverBin() {
  if (process.env.RINGHUB_BIN) return process.env.RINGHUB_BIN
  const t = process.env.CARGO_TARGET_DIR || join(ROOT, 'target')
  const p = join(t, 'debug', 'ringhub')
  if (!existsSync(p)) throw new Error(`no server binary at ${p}: run cargo build, or set RINGHUB_BIN`)
  return p
}

export function freePort() {
  return new Promise((res, rej) => {
    const s = createServer()
    s.on('error', rej)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => res(port))
    })
  })
}

const b64 = (x) => Buffer.from(typeof x === 'string' ? x : JSON.stringify(x)).toString('base64url')

/** An HS256 token for user `sub` (or anonymous-with-token when `sub` is null). */
export function jwt(sub, claims = {}) {
  const body = { exp: Math.floor(Date.now() / 1000) + 3600, ...claims }
  if (sub != null) body.sub = sub
  const head = b64({ alg: 'HS256', typ: 'JWT' }) + '.' + b64(body)
  return head + '.' + createHmac('sha256', SECRET).update(head).digest('base64url')
}

// Configurations tried in order: the first the server accepts is used for the whole file.
// [[topics]] and [store] are protocol v2 settings; a server without them refuses the file
// ("unknown setting"), and the tests that need them skip.
const BASE = `[auth]
jwt_secret = "${SECRET}"
anonymous = true

[api]
key = "${API_KEY}"
`
const TOPICS = `
[[topics]]
pattern = "chat:*"
history_size = 100
presence = true
join_leave = true
`
const STORE = (dir) => `
[store]
backend = "redb"
path = "${join(dir, 'data')}"
`
const VARIANTS = [
  { name: '[[topics]] + redb [store]', text: (d) => BASE + TOPICS + STORE(d), topics: true, store: true },
  { name: '[[topics]], default store', text: () => BASE + TOPICS, topics: true, store: false },
  { name: 'no [[topics]] (refused by the server)', text: () => BASE, topics: false, store: false },
]
let chosen = null
// Servers still running when this process exits (a crashed test file) are killed with it.
const live = new Set()
process.on('exit', () => live.forEach((p) => p.kill('SIGKILL')))
/** History in memory: a restart starts new epochs. */
export const MEMORY = { name: '[[topics]] + memory [store]', text: () => BASE + TOPICS + '\n[store]\nbackend = "memory"\n', topics: true }

export class Server {
  /** Starts a server on a free port (or `port`), waiting for /healthz. */
  static async start(port, variant) {
    const s = new Server()
    s.dir = mkdtempSync(join(tmpdir(), 'ringhub-js-'))
    s.port = port || (await freePort())
    if (variant) {
      // One given configuration, e.g. MEMORY; throws if the server refuses it.
      s.variant = variant
      writeFileSync(join(s.dir, 'ringhub.toml'), variant.text(s.dir))
      await s._spawn()
      return s
    }
    const list = chosen ? [chosen] : VARIANTS
    let last
    for (const v of list) {
      s.variant = v
      writeFileSync(join(s.dir, 'ringhub.toml'), v.text(s.dir))
      try {
        await s._spawn()
        chosen = v
        return s
      } catch (e) {
        last = e
        if (!/unknown setting|unknown field|invalid|expected/i.test(e.message)) break
      }
    }
    throw last
  }

  get url() {
    return `ws://127.0.0.1:${this.port}/ws`
  }
  get http() {
    return `http://127.0.0.1:${this.port}`
  }

  async _spawn() {
    const args = ['--config', join(this.dir, 'ringhub.toml'), '--io', 'epoll', '--listen', `127.0.0.1:${this.port}`]
    args.push('--shards', '2', '--no-pin', '--stats-interval', '0s')
    const p = (this.proc = spawn(serverBin(), args, { cwd: this.dir, stdio: ['ignore', 'ignore', 'pipe'] }))
    this.log = ''
    p.stderr.on('data', (d) => (this.log += d))
    live.add(p)
    p.on('exit', () => live.delete(p))
    let exited = false
    this.exit = new Promise((r) => p.on('exit', (code, sig) => ((exited = true), r({ code, sig }))))
    const deadline = Date.now() + 20000
    while (Date.now() < deadline) {
      if (exited) throw new Error(`ringhub exited at start: ${this.log}`)
      try {
        const r = await fetch(this.http + '/healthz')
        if (r.ok) return
      } catch {}
      await delay(25) // polling interval of the readiness probe
    }
    p.kill('SIGKILL')
    throw new Error(`ringhub not healthy within 20 s: ${this.log}`)
  }

  /** Kills the process (SIGKILL by default) and waits for its exit. */
  async kill(sig = 'SIGKILL') {
    if (this.proc.exitCode == null && this.proc.signalCode == null) this.proc.kill(sig)
    await this.exit
  }

  /** Starts the same configuration again on the same port. */
  restart() {
    return this._spawn()
  }

  async stop() {
    await this.kill()
    rmSync(this.dir, { recursive: true, force: true })
  }

  /** Calls the HTTP API; returns {status, body}. */
  async api(method, path, body) {
    const r = await fetch(this.http + path, {
      method,
      headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    })
    const text = await r.text()
    let json
    try {
      json = JSON.parse(text)
    } catch {
      json = text
    }
    return { status: r.status, body: json }
  }
}

/** Resolves with the first `ev` of `em` for which `pred` holds; rejects after `ms`. */
export function next(em, ev, pred = () => true, ms = 10000) {
  return new Promise((res, rej) => {
    const t = setTimeout(() => (off(), rej(new Error(`no '${ev}' within ${ms} ms`))), ms)
    const off = em.on(ev, (x) => {
      if (pred(x)) {
        clearTimeout(t)
        off()
        res(x)
      }
    })
  })
}

/** Polls `fn` until it returns a truthy value; rejects after `ms`. */
export async function until(fn, ms = 10000, what = 'condition') {
  const deadline = Date.now() + ms
  for (;;) {
    const v = await fn()
    if (v) return v
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await delay(20)
  }
}

/** Records every state a client goes through. */
export function states(c) {
  const list = []
  c.on('state', (s) => list.push(s))
  return list
}

/** Fast reconnects for tests. */
export const FAST = { initialDelay: 50, maxDelay: 300, factor: 2 }

/** Whether the server speaks protocol v2 (`info` answers with a client id). */
export async function isV2(c) {
  const d = await c.info().catch(() => null)
  return !!(d && d.client)
}

/** Whether topics `chat:*` keep history (the subscribe reply carries an epoch). */
export async function hasHistory(c, topic = 'chat:probe-' + Math.random()) {
  const s = c.subscribe(topic)
  const d = await s.ready.catch(() => null)
  await s.unsubscribe()
  return !!(d && d.epoch != null)
}
