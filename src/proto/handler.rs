//! Handlers, middleware and the per-message [`Context`] — the application-facing API, modelled on
//! Go's WSX (`Handle("chat:*", h)`, `Use(mw)`, `Chain(a, b)`), with errors that reach the client.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::proto::envelope;
use crate::proto::error::{ErrorCode, HandlerError, HandlerResult};
use crate::proto::pattern::{validate_topic, Pattern};
use crate::ConnId;

/// One client message as a handler sees it, borrowed from the frame.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub(crate) topic: &'a str,
    pub(crate) event: &'a str,
    pub(crate) data: Option<&'a RawValue>,
    pub(crate) id: Option<u64>,
    pub(crate) exclude_sender: bool,
    pub(crate) spread: bool,
}

impl<'a> Message<'a> {
    /// A message, for driving handlers in tests.
    pub fn new(
        topic: &'a str,
        event: &'a str,
        data: Option<&'a RawValue>,
        id: Option<u64>,
    ) -> Self {
        Self {
            topic,
            event,
            data,
            id,
            exclude_sender: false,
            spread: false,
        }
    }
    /// The same message with `data` marked as an argument list (`"spread":true`) or not.
    pub fn with_spread(mut self, spread: bool) -> Self {
        self.spread = spread;
        self
    }
    /// Whether `data` is an argument list (`"spread":true`: a Socket.IO emit with several
    /// arguments) rather than one argument. See [`args`](Self::args).
    pub fn spread(&self) -> bool {
        self.spread
    }
    /// The same message with its `exclude_sender` flag set as given.
    pub fn with_exclude_sender(mut self, exclude: bool) -> Self {
        self.exclude_sender = exclude;
        self
    }
    /// Whether the client asked that its publication skip its own connection.
    pub fn exclude_sender(&self) -> bool {
        self.exclude_sender
    }
    /// The topic the message was sent on.
    pub fn topic(&self) -> &'a str {
        self.topic
    }
    /// The event name.
    pub fn event(&self) -> &'a str {
        self.event
    }
    /// The raw JSON of `data`, exactly as the client sent it.
    pub fn data_raw(&self) -> Option<&'a RawValue> {
        self.data
    }
    /// The request id, if the client asked for a reply.
    pub fn id(&self) -> Option<u64> {
        self.id
    }
    /// The arguments, raw: a Socket.IO `emit(name, ...args)` gives exactly its `args` (one array
    /// argument stays one argument); a `/ws` message gives its `data` as the only argument
    /// (none without `data`), or the elements of `data` when it says `"spread":true`. Data
    /// marked `spread` that is not an array is a `bad_request` error.
    pub fn args(&self) -> Result<Vec<&'a RawValue>, HandlerError> {
        crate::proto::args::split(self.data, self.spread)
            .map_err(|e| HandlerError::bad_request(e.to_string()))
    }
    /// Deserialises `data` into `T`; a mismatch is a `bad_request` error for the client.
    pub fn data<T: Deserialize<'a>>(&self) -> Result<T, HandlerError> {
        let raw = self.data.map_or("null", RawValue::get);
        serde_json::from_str(raw).map_err(|e| {
            let e = crate::proto::error::shorten(&e.to_string());
            HandlerError::bad_request(format!("invalid data: {e}"))
        })
    }
}

/// A publication a handler makes, before routing decides how it travels: encoded at once for a
/// topic without history, or sequenced by the store thread (which adds its offset) for one with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outgoing<'a> {
    pub topic: &'a str,
    pub event: &'a str,
    pub data: Option<&'a [u8]>,
    /// Skip the message's own connection.
    pub exclude_sender: bool,
    /// The request id to answer once the publication is stored (topics with history).
    pub reply_id: Option<u64>,
}

/// Where a [`Context`]'s actions go: straight into the shard for inline handlers, through the
/// shard's inbox for handlers on the pool.
pub(crate) trait Effects {
    /// Queues a complete frame to the message's connection.
    fn to_conn(&mut self, frame: Bytes);
    /// Delivers a publication to every subscriber on every shard. Returns true when the request
    /// (`reply_id`) will be answered later, by the store thread.
    fn publish(&mut self, p: Outgoing<'_>) -> Result<bool, HandlerError>;
    /// Subscribes the message's connection to a validated pattern.
    fn subscribe(&mut self, pattern: &str) -> HandlerResult;
    /// Unsubscribes the message's connection.
    fn unsubscribe(&mut self, pattern: &str);
}

/// The per-message context: who sent it and what the handler may do in response.
pub struct Context<'a> {
    pub(crate) conn: ConnId,
    /// This node's name (client ids are `"<node>.<hex>"`).
    pub(crate) node: &'a str,
    pub(crate) user: Option<Arc<str>>,
    pub(crate) remote: SocketAddr,
    pub(crate) topic: &'a str,
    pub(crate) id: Option<u64>,
    pub(crate) replied: bool,
    pub(crate) fx: &'a mut dyn Effects,
}

impl Context<'_> {
    /// The connection the message came from.
    pub fn conn_id(&self) -> ConnId {
        self.conn
    }
    /// The connection's client id as clients see it (`info`, presence, join/leave): a string,
    /// unique in the cluster, safe for JavaScript (unlike [`ConnId::raw`] above 2^53).
    pub fn client_id(&self) -> String {
        format!("{}.{:x}", self.node, self.conn.raw())
    }
    /// The authenticated user of the connection, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
    /// The peer's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote
    }

    /// Sends `{topic, event, data}` to this connection only.
    pub fn send<T: Serialize + ?Sized>(
        &mut self,
        topic: &str,
        event: &str,
        data: &T,
    ) -> HandlerResult {
        let data = to_json(data)?;
        self.send_raw(topic, event, Some(&data));
        Ok(())
    }

    /// Sends `{topic, event, data}` to this connection with `data` already JSON.
    pub fn send_raw(&mut self, topic: &str, event: &str, data: Option<&RawValue>) {
        let frame = envelope::publication(topic, event, data.map(|d| d.get().as_bytes()));
        self.fx.to_conn(frame);
    }

    /// Sends an event with several arguments to this connection only:
    /// `{topic, event, data: [args], "spread": true}`, which a Socket.IO client receives as
    /// `emit(event, ...args)` (on the namespace of the event being handled). `args` must
    /// serialise to a JSON array (a tuple, a slice, `json!([..])`).
    pub fn send_args<T: Serialize + ?Sized>(
        &mut self,
        topic: &str,
        event: &str,
        args: &T,
    ) -> HandlerResult {
        let list = to_json(args)?;
        let args = arg_list(&list)?;
        self.send_args_raw(topic, event, &args);
        Ok(())
    }

    /// Like [`send_args`](Self::send_args) with each argument already JSON.
    pub fn send_args_raw(&mut self, topic: &str, event: &str, args: &[&RawValue]) {
        let frame = crate::proto::args::publication(topic, event, args);
        self.fx.to_conn(frame);
    }

    /// Answers the request with several arguments: `{"event":"reply","id":N,"topic":T,
    /// "data":[args],"spread":true}`, which a Socket.IO client's ack callback receives as
    /// `(...args)` (Node-style `ack(err, result)`: `reply_args(&(None::<()>, result))`). `args`
    /// must serialise to a JSON array. As with [`reply`](Self::reply), only the first reply
    /// counts.
    pub fn reply_args<T: Serialize + ?Sized>(&mut self, args: &T) -> HandlerResult {
        let list = to_json(args)?;
        let args = arg_list(&list)?;
        self.reply_args_raw(&args);
        Ok(())
    }

    /// Like [`reply_args`](Self::reply_args) with each argument already JSON.
    pub fn reply_args_raw(&mut self, args: &[&RawValue]) {
        if let (Some(id), false) = (self.id, self.replied) {
            self.replied = true;
            self.fx
                .to_conn(crate::proto::args::reply(id, self.topic, args));
        }
    }

    /// Answers the request with `{"event":"reply","id":N,"topic":T,"data":D}`. Without an `id` in
    /// the request there is nobody to answer and nothing is sent. Only the first reply counts.
    pub fn reply<T: Serialize + ?Sized>(&mut self, data: &T) -> HandlerResult {
        let data = to_json(data)?;
        self.reply_raw(Some(&data));
        Ok(())
    }

    /// Like [`reply`](Self::reply) with `data` already JSON (or none).
    pub fn reply_raw(&mut self, data: Option<&RawValue>) {
        if let (Some(id), false) = (self.id, self.replied) {
            self.replied = true;
            let frame = envelope::reply(id, self.topic, data.map(|d| d.get().as_bytes()));
            self.fx.to_conn(frame);
        }
    }

    /// Publishes `{topic, event, data}` to every subscriber of `topic` on every shard.
    pub fn publish<T: Serialize + ?Sized>(
        &mut self,
        topic: &str,
        event: &str,
        data: &T,
    ) -> HandlerResult {
        let data = to_json(data)?;
        self.publish_raw(topic, event, Some(&data))
    }

    /// Publishes with `data` already JSON: the bytes are forwarded as they are. The publication is
    /// encoded once; every subscriber shares the same buffer.
    pub fn publish_raw(
        &mut self,
        topic: &str,
        event: &str,
        data: Option<&RawValue>,
    ) -> HandlerResult {
        self.publish_out(topic, event, data, false)
    }

    /// Like [`publish_raw`](Self::publish_raw), but every subscriber except this connection
    /// receives it (Socket.IO's `socket.broadcast.to(room)`).
    pub fn broadcast_raw(
        &mut self,
        topic: &str,
        event: &str,
        data: Option<&RawValue>,
    ) -> HandlerResult {
        self.publish_out(topic, event, data, true)
    }

    fn publish_out(
        &mut self,
        topic: &str,
        event: &str,
        data: Option<&RawValue>,
        exclude_sender: bool,
    ) -> HandlerResult {
        validate_topic(topic).map_err(|e| HandlerError::bad_request(e.to_string()))?;
        // The request's own topic: its reply can wait for the store and carry the offset.
        let reply_id = self.id.filter(|_| !self.replied && topic == self.topic);
        let deferred = self.fx.publish(Outgoing {
            topic,
            event,
            data: data.map(|d| d.get().as_bytes()),
            exclude_sender,
            reply_id,
        })?;
        if deferred {
            self.replied = true;
        }
        Ok(())
    }

    /// Subscribes this connection to `pattern` (`*` suffix for a prefix wildcard).
    pub fn subscribe(&mut self, pattern: &str) -> HandlerResult {
        Pattern::parse(pattern).map_err(|e| HandlerError::bad_request(e.to_string()))?;
        self.fx.subscribe(pattern)
    }

    /// Unsubscribes this connection from `pattern`.
    pub fn unsubscribe(&mut self, pattern: &str) {
        self.fx.unsubscribe(pattern);
    }

    /// Puts this connection in `room` (Socket.IO's `socket.join`): the same as [`subscribe`](Self::subscribe).
    pub fn join(&mut self, room: &str) -> HandlerResult {
        self.subscribe(room)
    }

    /// Takes this connection out of `room` (Socket.IO's `socket.leave`).
    pub fn leave(&mut self, room: &str) {
        self.unsubscribe(room);
    }

    /// Sends the automatic answer after the handler ran: the error, or an empty reply if the
    /// request had an id and the handler did not reply itself. Returns the error code, if any.
    pub(crate) fn finish(&mut self, result: HandlerResult) -> Option<ErrorCode> {
        match result {
            Ok(()) => {
                self.reply_raw(None);
                None
            }
            Err(e) => {
                let frame = envelope::error(self.id, self.topic, e.code, &e.message);
                self.fx.to_conn(frame);
                Some(e.code)
            }
        }
    }
}

fn to_json<T: Serialize + ?Sized>(data: &T) -> Result<Box<RawValue>, HandlerError> {
    serde_json::value::to_raw_value(data)
        .map_err(|e| HandlerError::internal(format!("cannot encode data: {e}")))
}

/// The elements of a serialised argument list; anything but an array is the handler's mistake.
fn arg_list(list: &RawValue) -> Result<Vec<&RawValue>, HandlerError> {
    crate::proto::args::split(Some(list), true)
        .map_err(|_| HandlerError::internal("arguments must serialise to a JSON array"))
}

/// Handles messages whose topic matches the pattern it was registered under.
pub trait Handler: Send + Sync + 'static {
    /// Handles one message. An `Err` is sent to the client as an `error` envelope.
    fn call(&self, ctx: &mut Context<'_>, msg: &Message<'_>) -> HandlerResult;
}

impl<F> Handler for F
where
    F: Fn(&mut Context<'_>, &Message<'_>) -> HandlerResult + Send + Sync + 'static,
{
    fn call(&self, ctx: &mut Context<'_>, msg: &Message<'_>) -> HandlerResult {
        self(ctx, msg)
    }
}

/// Wraps handlers: runs before (and after) the rest of the chain, or stops it by returning early.
pub trait Middleware: Send + Sync + 'static {
    /// Handles one message; call `next.run(ctx, msg)` to continue down the chain.
    fn call(&self, ctx: &mut Context<'_>, msg: &Message<'_>, next: Next<'_>) -> HandlerResult;
}

impl<F> Middleware for F
where
    F: Fn(&mut Context<'_>, &Message<'_>, Next<'_>) -> HandlerResult + Send + Sync + 'static,
{
    fn call(&self, ctx: &mut Context<'_>, msg: &Message<'_>, next: Next<'_>) -> HandlerResult {
        self(ctx, msg, next)
    }
}

trait Invoke {
    fn invoke(&self, ctx: &mut Context<'_>, msg: &Message<'_>) -> HandlerResult;
}

impl<H: Handler + ?Sized> Invoke for H {
    fn invoke(&self, ctx: &mut Context<'_>, msg: &Message<'_>) -> HandlerResult {
        self.call(ctx, msg)
    }
}

/// The rest of a middleware chain.
#[derive(Clone, Copy)]
pub struct Next<'a>(&'a dyn Invoke);

impl Next<'_> {
    /// Runs the rest of the chain.
    pub fn run(self, ctx: &mut Context<'_>, msg: &Message<'_>) -> HandlerResult {
        self.0.invoke(ctx, msg)
    }
}

struct Bound<'a> {
    mw: &'a dyn Middleware,
    next: Next<'a>,
}

impl Invoke for Bound<'_> {
    fn invoke(&self, ctx: &mut Context<'_>, msg: &Message<'_>) -> HandlerResult {
        self.mw.call(ctx, msg, self.next)
    }
}

/// `a` then `b` as one middleware: `chain(auth, log)` runs `auth`, which calls `log`, which calls
/// the handler.
pub fn chain(a: impl Middleware, b: impl Middleware) -> impl Middleware {
    Chain(a, b)
}

struct Chain<A, B>(A, B);

impl<A: Middleware, B: Middleware> Middleware for Chain<A, B> {
    fn call(&self, ctx: &mut Context<'_>, msg: &Message<'_>, next: Next<'_>) -> HandlerResult {
        let rest = Bound { mw: &self.1, next };
        self.0.call(ctx, msg, Next(&rest))
    }
}

/// A handler behind one middleware (built once at startup, not per message).
pub(crate) struct Layered {
    pub(crate) mw: Arc<dyn Middleware>,
    pub(crate) inner: Arc<dyn Handler>,
}

impl Handler for Layered {
    fn call(&self, ctx: &mut Context<'_>, msg: &Message<'_>) -> HandlerResult {
        self.mw.call(ctx, msg, Next(&HandlerRef(&*self.inner)))
    }
}

struct HandlerRef<'a>(&'a dyn Handler);

impl Invoke for HandlerRef<'_> {
    fn invoke(&self, ctx: &mut Context<'_>, msg: &Message<'_>) -> HandlerResult {
        self.0.call(ctx, msg)
    }
}

/// The default pub/sub handler the server binary registers on `*`: forwards the message to every
/// subscriber of its topic, `data` untouched.
pub fn pubsub(ctx: &mut Context<'_>, msg: &Message<'_>) -> HandlerResult {
    if msg.exclude_sender {
        ctx.broadcast_raw(msg.topic, msg.event, msg.data)
    } else {
        ctx.publish_raw(msg.topic, msg.event, msg.data)
    }
}

#[cfg(test)]
#[path = "handler_tests.rs"]
mod tests;
