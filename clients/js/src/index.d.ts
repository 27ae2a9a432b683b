// Types of ringhub-client (src/index.js). Protocol: docs/PROTOCOL.md.

/** Position in a topic's stream (topics with history). */
export interface StreamPosition {
  epoch: string
  offset: number
}

/** A message from the server: a publication, a join/leave, a send or a durable user message. */
export interface Publication<T = unknown> {
  topic: string
  event: string
  data?: T
  /** Present on topics with history, and on durable user messages (the inbox offset). */
  offset?: number
  /**
   * Durable user messages only: acknowledges the message (idempotent). Called automatically
   * after the handlers return (their promises resolve) unless `autoAck: false`.
   */
  ack?: () => void
}

export interface ClientInfo {
  client: string
  user: string
}

export interface SubscribeReply {
  epoch?: string
  offset?: number
  recovered?: boolean
  publications?: Array<Omit<Publication, 'topic'>>
}

export interface HistoryReply<T = unknown> {
  epoch: string
  offset: number
  publications: Publication<T>[]
}

export interface PresenceReply {
  clients: ClientInfo[]
}

export interface PresenceStats {
  clients: number
  users: number
}

export interface InfoReply {
  client: string
  user: string
  node: string
}

export type ConnectionState = 'connecting' | 'connected' | 'disconnected' | 'reconnecting' | 'closed'

export interface ReconnectOptions {
  /** First delay, ms (default 1000). */
  initialDelay?: number
  /** Largest delay, ms (default 5000). */
  maxDelay?: number
  /** Growth per failed attempt (default 2). */
  factor?: number
  /** `full` (default): a uniformly random delay in [0, delay); `none`: the delay itself. */
  jitter?: 'full' | 'none'
}

export interface WebSocketLike {
  onopen: ((ev: any) => any) | null
  onmessage: ((ev: { data: any }) => any) | null
  onerror: ((ev: any) => any) | null
  onclose: ((ev: { code: number; reason: string }) => any) | null
  send(data: string | Uint8Array): void
  close(code?: number, reason?: string): void
  /** The negotiated subprotocol (`ringhub.msgpack` with `format: 'msgpack'`). */
  protocol?: string
  binaryType?: string
}

export interface ConnectOptions {
  /** Sent as the `token` query parameter. */
  token?: string
  /** Called before every (re)connect; wins over `token`. Return null/undefined for none. */
  getToken?: () => string | null | undefined | Promise<string | null | undefined>
  /** Backoff settings, or `false` to never reconnect. */
  reconnect?: ReconnectOptions | false
  /** Default timeout of requests, ms (default 10000; 0 = none). */
  requestTimeout?: number
  /** WebSocket constructor (default: the global one), e.g. from the `ws` package. */
  WebSocket?: new (url: string, protocols?: string[]) => WebSocketLike
  /** EventSource constructor for the SSE transport (default: the global one, else fetch). */
  EventSource?: new (url: string) => any
  /** `auto` (default): WebSocket when available, else SSE. SSE is receive-only. */
  transport?: 'websocket' | 'sse' | 'auto'
  /** SSE endpoint (default: the URL with its last path segment replaced by `sse`). */
  sseUrl?: string
  /** Acknowledge durable user messages after the handlers (default true). */
  autoAck?: boolean
  /**
   * Wire format: `json` (default, text frames) or `msgpack` (binary MessagePack frames, the
   * subprotocol `ringhub.msgpack`; `data` may then hold `Uint8Array`s, received as such).
   */
  format?: 'json' | 'msgpack'
  /** The MessagePack codec for `format: 'msgpack'` (default: `import('@msgpack/msgpack')`). */
  msgpack?: { encode(value: unknown): Uint8Array; decode(data: Uint8Array): unknown }
}

export interface RequestOptions {
  /** ms; overrides `requestTimeout`. */
  timeout?: number
}

export interface PublishOptions extends RequestOptions {
  /** Deliver to every subscriber but this connection. */
  excludeSender?: boolean
}

export interface HistoryOptions extends RequestOptions {
  limit?: number
  since?: StreamPosition
  /** Only publications up to this offset (a paged reply's `next.until`). */
  until?: number
}

export interface SubscribeOptions {
  /** Recover from this position (exact topics with history). */
  since?: StreamPosition
  /** Ask for Fossil deltas (`delta: "fossil"`, exact topics with history): publications may
   * arrive as deltas against the previous one; the client applies them, so handlers always see
   * full data. A delta that does not apply is reported as an `error` (code `delta_base` or
   * `delta_failed`) and the subscription recovers: it subscribes again with `since`. */
  delta?: boolean
}

/** Error with a stable code: the server's (`bad_request`, `forbidden`, `not_available`, ...) or
 * the client's (`timeout`, `disconnected`, `closed`, `transport`, `already_subscribed`). */
export class RinghubError extends Error {
  constructor(code: string, message?: string, data?: unknown)
  code: string
  data?: unknown
}

type Off = () => void

export interface SubscriptionEvents {
  publication: Publication
  join: ClientInfo
  leave: ClientInfo
  /** Every successful (re)subscribe. */
  subscribed: SubscribeReply | undefined
  /** A resubscribe with `since` recovered what was missed (delivered before this event). */
  recovered: SubscribeReply
  /** A resubscribe with `since` could not recover: reload state; `epoch`/`offset` are current. */
  recovery_failed: SubscribeReply
  error: RinghubError
}

export class Subscription {
  readonly client: Client
  readonly topic: string
  readonly state: 'pending' | 'subscribed' | 'unsubscribed'
  /** Epoch of the topic's stream, once known. */
  readonly epoch: string | undefined
  /** Offset of the last publication delivered, once known. */
  readonly offset: number | undefined
  /** Resolves with the first subscribe reply; rejects if the server refuses the subscription. */
  readonly ready: Promise<SubscribeReply | undefined>
  on<E extends keyof SubscriptionEvents>(ev: E, fn: (x: SubscriptionEvents[E]) => unknown): Off
  off<E extends keyof SubscriptionEvents>(ev: E, fn: (x: SubscriptionEvents[E]) => unknown): void
  unsubscribe(): Promise<void>
}

export interface ClientEvents {
  state: ConnectionState
  error: Error
  /** Durable user messages, and publications matching no subscription (sends, broadcasts). */
  message: Publication
}

export class Client {
  constructor(url: string, options?: ConnectOptions)
  readonly url: string
  readonly state: ConnectionState
  readonly transport: 'websocket' | 'sse'
  /** Close code and reason of the last connection the server closed. */
  readonly lastClose?: { code: number; reason: string }
  on<E extends keyof ClientEvents>(ev: E, fn: (x: ClientEvents[E]) => unknown): Off
  off<E extends keyof ClientEvents>(ev: E, fn: (x: ClientEvents[E]) => unknown): void
  subscribe<T = unknown>(
    topic: string,
    handler?: (p: Publication<T>) => unknown,
    options?: SubscribeOptions,
  ): Subscription
  publish(topic: string, event: string, data?: unknown, options?: PublishOptions): Promise<{ offset?: number } | undefined>
  request<R = unknown>(event: string, topic?: string, data?: unknown, options?: RequestOptions): Promise<R>
  history<T = unknown>(topic: string, options?: HistoryOptions): Promise<HistoryReply<T>>
  presence(topic: string): Promise<PresenceReply>
  presenceStats(topic: string): Promise<PresenceStats>
  info(): Promise<InfoReply>
  close(): void
}

export function connect(url: string, options?: ConnectOptions): Client
