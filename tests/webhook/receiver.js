// A webhook receiver for the tests, and the reference for receivers (docs/PROTOCOL.md,
// "Webhooks"): a plain Node `http` server. Usage: SECRET=... node receiver.js [port]
//
// - prints `listening <port>` once it listens;
// - POST /hook: verifies the `ringhub-signature` header (HMAC-SHA256 of "<t>.<raw body>" with
//   SECRET, constant-time compare, `t` within 5 minutes of the clock): a bad one is answered
//   400 and logged as `BAD <reason>`; while failing, answers 503; else writes one line
//   `REQ <raw body>` to stdout and answers 204;
// - POST /fail, POST /ok: switch failing on / off (answers 204).
'use strict';
const http = require('http');
const crypto = require('crypto');

const SECRET = process.env.SECRET || '';
// QUIET=1 (the benchmark): log `N <events in the request>` instead of the body.
const QUIET = process.env.QUIET === '1';
const TOLERANCE_S = 300;

// Returns null when the request is authentic, else why not.
function verify(header, body) {
  let t = null;
  const sigs = [];
  for (const part of (header || '').split(',')) {
    const [k, v] = part.trim().split('=');
    if (k === 't' && /^[0-9]+$/.test(v)) t = Number(v);
    if (k === 'v1' && v) sigs.push(v);
  }
  if (t === null || sigs.length === 0) return 'malformed header';
  const want = crypto.createHmac('sha256', SECRET).update(t + '.').update(body).digest();
  const ok = sigs.some((s) => {
    const got = Buffer.from(s, 'hex');
    return got.length === want.length && crypto.timingSafeEqual(got, want);
  });
  if (!ok) return 'signature mismatch';
  if (Math.abs(Date.now() / 1000 - t) > TOLERANCE_S) return 'stale timestamp (replay?)';
  return null;
}

let failing = false;
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const raw = Buffer.concat(chunks);
    const body = raw.toString('utf8');
    if (req.method === 'POST' && req.url === '/fail') {
      failing = true;
    } else if (req.method === 'POST' && req.url === '/ok') {
      failing = false;
    } else if (req.method === 'POST' && req.url === '/hook') {
      if (failing) {
        res.writeHead(503);
        res.end('failing on purpose');
        return;
      }
      const bad = verify(req.headers['ringhub-signature'], raw);
      if (bad) {
        process.stdout.write('BAD ' + bad + '\n');
        res.writeHead(400);
        res.end(bad);
        return;
      }
      if (QUIET) {
        process.stdout.write('N ' + JSON.parse(body).events.length + '\n');
      } else {
        process.stdout.write('REQ ' + body.replace(/\n/g, ' ') + '\n');
      }
    } else {
      res.writeHead(404);
      res.end();
      return;
    }
    res.writeHead(204);
    res.end();
  });
});
server.keepAliveTimeout = 30000;
server.listen(Number(process.argv[2] || 0), '127.0.0.1', () => {
  process.stdout.write('listening ' + server.address().port + '\n');
});
