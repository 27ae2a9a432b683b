// The socket.io side of scripts/cluster-bench.sh: a socket.io 4 server whose rooms are the
// benchmark's topics, optionally joined to other processes through Redis with the official
// @socket.io/redis-adapter (one PUBLISH per broadcast, every node PSUBSCRIBEd to all).
//
//   node socketio-cluster-server.js PORT [redis://127.0.0.1:6379]
//
// Events: ringhub's default Socket.IO events (docs/PROTOCOL.md, "One model, two wire
// protocols"), which is what ringhub-loadtest --protocol socketio sends, so the same client
// measures this server and ringhub's /socket.io/:
//   join(room, ack)                          socket.join(room), then ack()
//   publish({topic, event, data}, ack)       io.to(topic).emit(event, data), then ack()
// and the older pair: subscribe(room, ack) (= join), publish(room, data) (emit "m", no ack).
// Transports: WebSocket and HTTP long-polling (the loadtest's `--transport polling`).
// Prints "listening on PORT" once ready (and, with Redis, once both clients are connected).
"use strict";
const http = require("http");
const { Server } = require("socket.io");

const port = Number(process.argv[2] || 9700);
const redisUrl = process.argv[3];

async function main() {
  const httpServer = http.createServer();
  const io = new Server(httpServer, {
    transports: ["polling", "websocket"],
    perMessageDeflate: false,
    serveClient: false,
  });
  if (redisUrl) {
    const { createClient } = require("redis");
    const { createAdapter } = require("@socket.io/redis-adapter");
    const pub = createClient({ url: redisUrl });
    const sub = pub.duplicate();
    for (const c of [pub, sub]) c.on("error", (e) => console.error("redis:", e.message));
    await Promise.all([pub.connect(), sub.connect()]);
    io.adapter(createAdapter(pub, sub));
  }
  io.on("connection", (socket) => {
    const join = (room, ack) => {
      if (typeof room !== "string") return;
      socket.join(room);
      if (typeof ack === "function") ack();
    };
    socket.on("join", join);
    socket.on("subscribe", join);
    socket.on("publish", (p, data) => {
      if (typeof p === "string") {
        io.to(p).emit("m", data);
      } else if (p && typeof p.topic === "string") {
        io.to(p.topic).emit(typeof p.event === "string" ? p.event : "message", p.data);
        if (typeof data === "function") data();
      }
    });
  });
  httpServer.listen(port, "127.0.0.1", () => console.log(`listening on ${port}`));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
