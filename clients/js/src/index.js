// ringhub-client: the ringhub client for browsers, Node >= 20 and Bun. No build; no dependencies
// unless `format: 'msgpack'` is asked for (then @msgpack/msgpack, loaded on first connect).
// Protocol: docs/PROTOCOL.md (versions 1 and 2).

import { applyDelta } from './fossil.js'

const noop = () => {}
const enc = new TextEncoder()
const dec = new TextDecoder('utf-8', { fatal: true })

// The index after the JSON string starting at s[i], or -1.
function skipStr(s, i) {
  if (s[i] !== '"') return -1
  for (i++; i < s.length; i++) {
    if (s[i] === '\\') i++
    else if (s[i] === '"') return i + 1
  }
  return -1
}

// The exact UTF-8 bytes of `data` in a publication frame as the server writes it,
// {"topic":T,"event":E,"data":D,"offset":O}: the base of the next delta (null if not found).
function rawData(raw) {
  if (typeof raw !== 'string' || !raw.startsWith('{"topic":')) return null
  let i = skipStr(raw, 9)
  if (i < 0 || !raw.startsWith(',"event":', i)) return null
  i = skipStr(raw, i + 9)
  const end = raw.lastIndexOf(',"offset":')
  if (i < 0 || !raw.startsWith(',"data":', i) || end <= i + 8) return null
  return enc.encode(raw.slice(i + 8, end))
}

/** An error with a stable `code` (the server's, or `timeout`, `disconnected`, `closed`, ...). */
export class RinghubError extends Error {
  constructor(code, message, data) {
    super(message || code)
    this.name = 'RinghubError'
    this.code = code
    if (data !== undefined) this.data = data
  }
}

// What to do when the runtime has no WebSocket (Node 20 hides it behind a flag).
const NO_WS =
  'no global WebSocket: on Node 20 run `node --experimental-websocket`, use Node >= 22, or pass one: connect(url, { WebSocket }) (e.g. from the `ws` package)'

const MSGPACK = 'ringhub.msgpack'

const fromServer = (d) => new RinghubError((d && d.code) || 'error', d && d.message, d)

class Emitter {
  constructor() {
    this._l = {}
  }
  /** Adds a listener; returns a function that removes it. */
  on(ev, fn) {
    ;(this._l[ev] ||= new Set()).add(fn)
    return () => this.off(ev, fn)
  }
  off(ev, fn) {
    this._l[ev] && this._l[ev].delete(fn)
  }
  _has(ev) {
    return !!(this._l[ev] && this._l[ev].size)
  }
  // Calls the listeners of `ev` with `a`. With `out`, collects their results (a throw becomes a
  // rejected promise); without, a throwing listener is reported as an error.
  _emit(ev, a, out) {
    for (const fn of this._l[ev] || []) {
      try {
        const v = fn(a)
        out && out.push(v)
      } catch (e) {
        out ? out.push(Promise.reject(e)) : this._oops(e)
      }
    }
  }
}

/** One subscription to a topic or pattern; made by `client.subscribe`. */
export class Subscription extends Emitter {
  constructor(client, topic, handler, since) {
    super()
    this.client = client
    this.topic = topic
    /** `pending`, `subscribed` or `unsubscribed`. */
    this.state = 'pending'
    /** Epoch of the topic's stream (topics with history). */
    this.epoch = since && since.epoch
    if (since) client._pos.set(topic, since.offset)
    if (handler) this.on('publication', handler)
    this.ready = new Promise((res, rej) => {
      this._res = res
      this._rej = rej
    })
    this.ready.catch(noop)
  }
  /** Offset of the last publication delivered (topics with history). */
  get offset() {
    return this.client._pos.get(this.topic)
  }
  unsubscribe() {
    return this.client._unsub(this)
  }
  _oops(e) {
    this._has('error') ? this._emit('error', e) : this.client._oops(e)
  }
}

/** Connects to `url` (`ws://host:port/ws`); see the README for the options. */
export const connect = (url, options) => new Client(url, options)

export class Client extends Emitter {
  constructor(url, o = {}) {
    super()
    this.url = url
    this.o = o
    const r = o.reconnect
    this._bo = r === false ? null : { initialDelay: 1000, maxDelay: 5000, factor: 2, jitter: 'full', ...r }
    this._subs = new Map() // pattern -> Subscription
    this._pos = new Map() // topic -> offset of the last delivered publication
    this._box = new Map() // user topic -> durable inbox state
    this._reqs = new Map() // id -> pending request
    this._q = [] // frames waiting for a connection
    this._id = this._gen = this._n = 0
    this.state = 'disconnected'
    this._W = o.WebSocket || globalThis.WebSocket
    const t = o.transport || 'auto'
    /** `websocket` or `sse` (receive-only). */
    this.transport = t === 'sse' || (t === 'auto' && !this._W) ? 'sse' : 'websocket'
    if (!this._W && this.transport === 'websocket') throw new RinghubError('not_available', NO_WS)
    // A fallback nobody asked for: say so now, not at the first publish.
    if (!this._W && t === 'auto') console.warn('ringhub-client: using SSE, which is receive-only: ' + (this._why = NO_WS))
    // Started on the next tick, so listeners attached right after connect() see `connecting`.
    this._timer = setTimeout(() => this._open(), 0)
  }

  _oops(e) {
    this._has('error') ? this._emit('error', e) : console.error(e)
  }

  _set(s) {
    if (s !== this.state) {
      this.state = s
      this._emit('state', s)
    }
  }

  // Ends the current attempt or connection, if any, without reporting it.
  _kill() {
    this._gen++
    clearTimeout(this._timer)
    const ws = this._ws
    this._ws = null
    if (ws) {
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = noop
      try {
        ws.close(1000)
      } catch {}
    }
  }

  async _open() {
    if (this.state === 'closed') return
    this._kill()
    this._st = 1
    const gen = this._gen
    if (this.state !== 'reconnecting') this._set('connecting')
    let tok
    try {
      tok = this.o.getToken ? await this.o.getToken() : this.o.token
    } catch (e) {
      return this._fail(gen, e)
    }
    if (gen !== this._gen) return
    if (this.transport === 'sse') return this._sse(gen, tok)
    const u = new URL(this.url)
    if (tok != null) u.searchParams.set('token', tok)
    let ws
    try {
      // MessagePack binary frames: the subprotocol `ringhub.msgpack` (docs/PROTOCOL.md).
      if (this.o.format === 'msgpack') {
        this._mp ||= this.o.msgpack || (await import('@msgpack/msgpack'))
        if (gen !== this._gen) return
        ws = this._ws = new this._W(u.href, [MSGPACK])
        ws.binaryType = 'arraybuffer'
      } else ws = this._ws = new this._W(u.href)
    } catch (e) {
      return this._fail(gen, e)
    }
    ws.onopen = () => gen === this._gen && this._up()
    ws.onmessage = (e) => gen === this._gen && this._msg(e.data)
    // Node 20 fires `error` without `close` on a refused connection: either one ends the attempt.
    ws.onerror = (e) => this._fail(gen, new RinghubError('transport', (e && e.message) || 'websocket error'))
    ws.onclose = (e) => this._fail(gen, null, e)
  }

  _sse(gen, tok) {
    const o = this.o
    const u = new URL(o.sseUrl || this.url)
    if (!o.sseUrl) {
      u.protocol = u.protocol.replace('ws', 'http')
      u.pathname = u.pathname.replace(/[^/]*$/, 'sse')
    }
    if (!this._subs.size) return // the stream opens with the first subscription
    u.searchParams.set('topics', [...this._subs.keys()].join(','))
    if (tok != null) u.searchParams.set('token', tok)
    const on = (d) => gen === this._gen && this._msg(d)
    const fail = (e) => this._fail(gen, e)
    const ES = o.EventSource || globalThis.EventSource
    if (ES) {
      const es = new ES(u.href)
      this._ws = es
      es.onopen = () => gen === this._gen && this._up()
      es.onmessage = (e) => on(e.data)
      es.onerror = () => fail(new RinghubError('transport', 'sse error'))
      return
    }
    // No EventSource (Node 20): read the stream with fetch.
    const ac = new AbortController()
    this._ws = { close: () => ac.abort() }
    fetch(u, { signal: ac.signal, headers: { accept: 'text/event-stream' } })
      .then(async (r) => {
        if (!r.ok) throw new RinghubError('transport', 'sse: HTTP ' + r.status, r.status)
        if (gen !== this._gen) return
        this._up()
        const rd = r.body.pipeThrough(new TextDecoderStream()).getReader()
        let buf = ''
        for (;;) {
          const { value, done } = await rd.read()
          if (done) throw new RinghubError('transport', 'sse stream ended')
          buf += value.replace(/\r/g, '')
          let i
          while ((i = buf.indexOf('\n\n')) >= 0) {
            const d = buf
              .slice(0, i)
              .split('\n')
              .filter((l) => l.startsWith('data:'))
              .map((l) => l.slice(l[5] === ' ' ? 6 : 5))
            buf = buf.slice(i + 2)
            if (d.length) on(d.join('\n'))
          }
        }
      })
      .catch(fail)
  }

  // The connection is open.
  _up() {
    this._n = 0
    this._set('connected')
    for (const s of this._subs.values())
      if (this.state === 'connected') this.transport === 'sse' ? this._subOk(s) : this._sendSub(s)
    const q = this._q
    this._q = []
    for (const f of q) this._send(f)
  }

  // One connection attempt, or one connection, ended (called by both `error` and `close`).
  _fail(gen, e, ev) {
    if (gen !== this._gen) return
    this._kill()
    this._drop('disconnected', 'connection lost', true)
    if (ev) this.lastClose = { code: ev.code, reason: ev.reason }
    if (e) this._emit('error', e)
    if (this.state === 'closed') return
    // Only an exact subscription can prove a stream continuous across connections.
    for (const t of this._pos.keys()) this._subs.has(t) || this._pos.delete(t)
    const b = this._bo
    if (this.state === 'connected' || !b) this._set('disconnected')
    if (!b) return
    const d = Math.min(b.maxDelay, b.initialDelay * b.factor ** this._n++)
    this._set('reconnecting')
    this._timer = setTimeout(() => this._open(), b.jitter === 'full' ? Math.random() * d : d)
  }

  // Rejects pending requests (only those already sent when `sent`).
  _drop(code, msg, sent) {
    for (const [id, r] of this._reqs)
      if (!sent || r.sent) {
        this._reqs.delete(id)
        clearTimeout(r.t)
        r.rej(new RinghubError(code, msg))
      }
  }

  /** Closes the connection for good. */
  close() {
    if (this.state === 'closed') return
    this._kill()
    this._set('closed')
    this._q = []
    this._drop('closed', 'client closed')
  }

  _send(f) {
    if (this.state !== 'connected') return this._q.push(f)
    this._ws.send(this._enc(f))
    const r = f.id && this._reqs.get(f.id)
    if (r) r.sent = true
  }

  _rq(f, timeout) {
    if (this.transport === 'sse')
      return Promise.reject(new RinghubError('not_available', 'SSE is receive-only' + (this._why ? ' (' + this._why + ')' : '')))
    if (this.state === 'closed') return Promise.reject(new RinghubError('closed', 'client closed'))
    const id = (f.id = ++this._id)
    return new Promise((res, rej) => {
      const ms = timeout ?? this.o.requestTimeout ?? 10000
      const r = { res, rej }
      if (ms > 0)
        r.t = setTimeout(() => {
          this._reqs.delete(id)
          this._q = this._q.filter((x) => x !== f)
          rej(new RinghubError('timeout', `no answer to ${f.event} within ${ms} ms`))
        }, ms)
      this._reqs.set(id, r)
      this._send(f)
    })
  }

  /** Sends `{event, topic, data, id}`; resolves with the reply's `data`, rejects with a RinghubError. */
  request(event, topic, data, o = {}) {
    return this._rq({ event, topic, data }, o.timeout)
  }

  /** Publishes; resolves with the reply's data (`{offset}` on topics with history). */
  publish(topic, event, data, o = {}) {
    const f = { topic, event, data }
    if (o.excludeSender) f.exclude_sender = true
    return this._rq(f, o.timeout)
  }

  /** The history, every page of it: a reply with `more` is followed by its `next` request. */
  history(topic, o = {}) {
    const all = []
    const page = (data) =>
      this.request('history', topic, data, o).then((d) => {
        for (const p of (d && d.publications) || []) {
          p.topic = topic
          all.push(p)
        }
        if (d && d.more && d.next) return page(d.next)
        if (d) {
          d.publications = all
          delete d.more
          delete d.next
        }
        return d
      })
    return page({ limit: o.limit, since: o.since, until: o.until })
  }

  presence(topic) {
    return this.request('presence', topic)
  }

  presenceStats(topic) {
    return this.request('presence_stats', topic)
  }

  info() {
    return this.request('info')
  }

  /** Subscribes to a topic or pattern (`chat:*`); `since: {epoch, offset}` recovers from there. */
  subscribe(topic, handler, o = {}) {
    if (this._subs.has(topic)) throw new RinghubError('already_subscribed', 'already subscribed to ' + topic)
    const s = new Subscription(this, topic, handler, o.since)
    /** Fossil deltas asked for (topics with history); applied here, handlers see full data. */
    s.delta = !!o.delta
    this._subs.set(topic, s)
    if (this.transport === 'sse') this._reopen()
    else if (this.state === 'connected') this._sendSub(s)
    return s
  }

  _unsub(s) {
    if (this._subs.get(s.topic) !== s) return Promise.resolve()
    this._subs.delete(s.topic)
    this._pos.delete(s.topic)
    s.state = 'unsubscribed'
    if (this.transport === 'sse') return this._reopen(), Promise.resolve()
    return this.state === 'connected' ? this.request('unsubscribe', s.topic).then(noop, noop) : Promise.resolve()
  }

  // SSE: the topic list is in the URL, so a change of subscriptions opens a new stream.
  _reopen() {
    if (this._ro || this.state === 'closed') return
    this._ro = 1
    queueMicrotask(() => {
      this._ro = 0
      // Not before the first attempt (the constructor's timer opens the stream).
      if (this.state !== 'closed' && this._st) this._open()
    })
  }

  _sendSub(s) {
    const t = s.topic
    const since = s.epoch != null && this._pos.has(t) ? { epoch: s.epoch, offset: this._pos.get(t) } : undefined
    // While a recovery is pending, live publications wait behind the recovered ones.
    s._buf = since ? [] : null
    // The server sends the first publication after a subscribe in full.
    s._base = null
    const data = since || s.delta ? { since, delta: s.delta ? 'fossil' : undefined } : undefined
    this._rq({ event: 'subscribe', topic: t, data }).then(
      (d) => this._subOk(s, d, since),
      (e) => {
        if (e.code === 'disconnected' || this._subs.get(t) !== s) return
        this._flush(s)
        if (e.code !== 'timeout') {
          this._subs.delete(t)
          s.state = 'unsubscribed'
        }
        s._rej(e)
        ;(s._has('error') ? s : this)._emit('error', e)
      },
    )
  }

  _subOk(s, d, since) {
    const t = s.topic
    if (this._subs.get(t) !== s) return
    if (since && d && d.recovered && d.more && d.next) {
      // A paged recovery: the other pages come through history, before the live publications
      // buffered meanwhile; if they cannot be had, the recovery failed.
      const done = (extra) => this._subOk(s, { ...d, more: undefined, next: undefined, ...extra }, since)
      this.history(t, { since: d.next.since, until: d.next.until }).then(
        (h) => done({ publications: [...(d.publications || []), ...h.publications] }),
        () => done({ recovered: false, publications: [] }),
      )
      return
    }
    if (d && d.epoch != null) {
      const p = this._pos.get(t)
      if (since && d.recovered) {
        for (const x of d.publications || []) this._take({ topic: t, ...x })
      } else if (since || s.epoch !== d.epoch || !(p > d.offset)) this._pos.set(t, d.offset)
      s.epoch = d.epoch
    }
    this._flush(s)
    s.state = 'subscribed'
    s._res(d)
    if (since) s._emit(d.recovered ? 'recovered' : 'recovery_failed', d)
    s._emit('subscribed', d)
  }

  _flush(s) {
    const b = s._buf
    s._buf = null
    if (b) for (const m of b) this._take(m)
  }

  // A frame as the connection speaks it: MessagePack bytes or JSON text.
  _enc(f) {
    return this._mp && this._ws && this._ws.protocol === MSGPACK ? this._mp.encode(f) : JSON.stringify(f)
  }

  _msg(raw) {
    let m
    try {
      m = typeof raw === 'string' ? JSON.parse(raw) : this._mp.decode(new Uint8Array(raw))
    } catch (e) {
      return this._oops(e)
    }
    const ev = m.event
    if (ev === 'reply' || ev === 'error') {
      const r = m.id != null && this._reqs.get(m.id)
      if (r) {
        this._reqs.delete(m.id)
        clearTimeout(r.t)
        ev === 'reply' ? r.res(m.data) : r.rej(fromServer(m.data))
      } else if (ev === 'error') this._emit('error', fromServer(m.data))
      return
    }
    if (m.ack) return this._durable(m)
    const s = m.offset != null && this._subs.get(m.topic)
    if (s && s.delta && !this._rebuild(s, m, raw)) return
    s && s._buf ? s._buf.push(m) : this._take(m)
  }

  // A delta subscription's publication: a delta is applied to the exact bytes of the previous
  // publication's data (kept as the base of the next). False when `m` must not be delivered:
  // a copy, or a delta that does not apply, which makes the subscription recover (subscribe
  // again with `since`: the server then sends what follows in full).
  _rebuild(s, m, raw) {
    const b = s._base
    if (b && b.o >= m.offset) return false
    if (m.delta == null) {
      const bytes = m.data === undefined ? null : rawData(raw)
      s._base = bytes && { o: m.offset, b: bytes }
      return true
    }
    try {
      if (!b || b.o + 1 !== m.offset) throw new RinghubError('delta_base', `a delta at offset ${m.offset} without its base`)
      const out = applyDelta(b.b, enc.encode(m.delta))
      m.data = JSON.parse(dec.decode(out))
      delete m.delta
      s._base = { o: m.offset, b: out }
      return true
    } catch (e) {
      s._base = null
      s._oops(e instanceof RinghubError ? e : new RinghubError('delta_failed', e.message))
      if (!s._buf && this.state === 'connected') this._sendSub(s)
      return false
    }
  }

  _match(t) {
    const r = []
    for (const [p, s] of this._subs) if (p === t || (p.endsWith('*') && t.startsWith(p.slice(0, -1)))) r.push(s)
    return r
  }

  // Delivers a publication unless its offset was delivered already.
  _take(m) {
    const t = m.topic
    if (m.offset != null) {
      if (this._pos.get(t) >= m.offset) return
      this._pos.set(t, m.offset)
    }
    this._deliver(m)
  }

  _deliver(m, out) {
    const subs = this._match(m.topic)
    const ev = m.event
    const jl = (ev === 'join' || ev === 'leave') && m.offset == null && !out
    for (const s of subs) s._emit(jl ? ev : 'publication', jl ? m.data : m, out)
    if (!subs.length || out) this._emit('message', m, out)
  }

  // A durable user message: delivered once per offset, acknowledged once handled.
  _durable(m) {
    const { topic: t, offset: o } = m
    let b = this._box.get(t)
    // A new inbox epoch (the server lost its inboxes): offsets restart, so does de-duplication.
    if (!b || b.e !== m.epoch) this._box.set(t, (b = { top: 0, s: new Map(), e: m.epoch }))
    const st = b.s.get(o)
    // A copy (redelivery): acknowledged again if it was, dropped if its handling is under way.
    if (o <= b.top && st !== 2) return st === 1 && this._ack(t, o)
    b.top = Math.max(b.top, o)
    const mark = (v) => {
      b.s.delete(o)
      b.s.set(o, v)
      if (b.s.size > 1000) b.s.delete(b.s.keys().next().value)
    }
    mark(0)
    m.ack = () => {
      mark(1)
      this._ack(t, o)
    }
    const out = []
    this._deliver(m, out)
    // Not acknowledged when nobody handled it or a handler failed: the server delivers it again.
    if (!out.length) return mark(2)
    if (this.o.autoAck !== false)
      Promise.all(out).then(m.ack, (e) => {
        mark(2)
        this._oops(e)
      })
  }

  _ack(topic, offset) {
    if (this.state === 'connected' && this._ws) this._ws.send(this._enc({ event: 'ack', topic, data: { offset } }))
  }
}
