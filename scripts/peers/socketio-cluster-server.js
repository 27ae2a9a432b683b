// The socket.io side of scripts/cluster-bench.sh: a socket.io 4 server whose rooms are the
// benchmark's topics, optionally joined to other processes through Redis with the official
// @socket.io/redis-adapter (one PUBLISH per broadcast, every node PSUBSCRIBEd to all).
//
//   node socketio-cluster-server.js PORT [redis://127.0.0.1:6379]
//
// Events (what ringhub-loadtest --protocol socketio sends):
//   subscribe(room, ack)   join the room, then ack (the loadtest waits for it)
//   publish(room, data)    io.to(room).emit("m", data): every member on every node
// Prints "listening on PORT" once ready (and, with Redis, once both clients are connected).
"use strict";
const http = require("http");
const { Server } = require("socket.io");

const port = Number(process.argv[2] || 9700);
const redisUrl = process.argv[3];

async function main() {
  const httpServer = http.createServer();
  const io = new Server(httpServer, {
    transports: ["websocket"],
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
    socket.on("subscribe", (room, ack) => {
      if (typeof room !== "string") return;
      socket.join(room);
      if (typeof ack === "function") ack();
    });
    socket.on("publish", (room, data) => {
      if (typeof room !== "string") return;
      io.to(room).emit("m", data);
    });
  });
  httpServer.listen(port, "127.0.0.1", () => console.log(`listening on ${port}`));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
