// Checks whether a Bun peer delivers a client's own message back to it.
// Usage: node check-bun-publish.js PORT  -> prints "sender receives own message: yes|no"
"use strict";
const { WebSocket } = require("ws");
const port = Number(process.argv[2] || 9002);
const a = new WebSocket(`ws://127.0.0.1:${port}/ws`);
const b = new WebSocket(`ws://127.0.0.1:${port}/ws`);
let open = 0, gotA = false, gotB = false;
const done = () => {
  console.log(`sender receives own message: ${gotA ? "yes" : "no"}; other subscriber receives it: ${gotB ? "yes" : "no"}`);
  a.close(); b.close();
  process.exit(0);
};
a.on("message", () => { gotA = true; });
b.on("message", () => { gotB = true; });
const ready = () => { if (++open === 2) { setTimeout(() => a.send("hello"), 100); setTimeout(done, 600); } };
a.on("open", ready);
b.on("open", ready);
setTimeout(() => { console.log("timeout"); process.exit(1); }, 5000);
