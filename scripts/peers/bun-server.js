// Bun peer: topic pub/sub with Bun.serve's built-in publish.
// Usage: bun bun-server.js [PORT]   (or PORT=... ; HOST defaults to 127.0.0.1)
// Path /echo echoes every message; any other path joins topic "all", and every message
// received is published to "all" with server.publish(), which reaches every subscriber
// INCLUDING the sender. (ws.publish() would exclude the sender: set BUN_PUBLISH=ws to
// use that instead; see scripts/README.md.)
// BUN_DEFLATE=1: perMessageDeflate: true, and every send and publish asks for compression
// (Bun compresses only what is sent with compress = true; BENCHMARKS.md, "Compression").
const port = Number(process.env.PORT || process.argv[2] || 9002);
const hostname = process.env.HOST || "127.0.0.1";
const viaSocket = process.env.BUN_PUBLISH === "ws";
const deflate = process.env.BUN_DEFLATE === "1";
const TOPIC = "all";

const server = Bun.serve({
  hostname,
  port,
  fetch(req, server) {
    const echo = new URL(req.url).pathname === "/echo";
    if (server.upgrade(req, { data: { echo } })) return;
    return new Response("WebSocket only\n", { status: 400 });
  },
  websocket: {
    perMessageDeflate: deflate,
    idleTimeout: 960,
    maxPayloadLength: 64 * 1024 * 1024,
    open(ws) {
      if (!ws.data.echo) ws.subscribe(TOPIC);
    },
    message(ws, msg) {
      if (ws.data.echo) ws.send(msg, deflate);
      else if (viaSocket) ws.publish(TOPIC, msg, deflate);
      else server.publish(TOPIC, msg, deflate);
    },
  },
});
console.error(`bun peer on ws://${hostname}:${server.port} (publish via ${viaSocket ? "ws" : "server"}, deflate ${deflate})`);
