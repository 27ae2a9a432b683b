// Node `ws` peer: broadcast loop over wss.clients; path /echo echoes.
// Usage: node node-ws-server.js [PORT]   (or PORT=... ; HOST defaults to 127.0.0.1)
"use strict";
const { WebSocketServer, WebSocket } = require("ws");

const port = Number(process.env.PORT || process.argv[2] || 9003);
const host = process.env.HOST || "127.0.0.1";
const wss = new WebSocketServer({ host, port, perMessageDeflate: false, maxPayload: 64 * 1024 * 1024 });

wss.on("connection", (ws, req) => {
  const echo = (req.url || "").startsWith("/echo");
  ws.on("error", () => {});
  ws.on("message", (data, isBinary) => {
    if (echo) {
      ws.send(data, { binary: isBinary });
      return;
    }
    // Every connection, sender included, gets the message.
    for (const client of wss.clients) {
      if (client.readyState === WebSocket.OPEN) client.send(data, { binary: isBinary });
    }
  });
});
wss.on("listening", () => console.error(`node ws peer on ws://${host}:${port}`));
