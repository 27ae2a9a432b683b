// A small application backend for ringhub's proxies (plain `http`, no framework).
//
// It implements the rules of the Arabic project-collaboration design (seed 001):
// a user joins `project:<id>` only if `checkProjectAccess(user, id)` says so, comments on a
// project carry their author, and an RPC lists the user's projects.
//
//   node examples/backend/server.js [--port 3000]
//
// Prints `listening <port>` once it accepts requests. Every request and answer body is in
// docs/PROTOCOL.md ("Backend proxies") and README.md ("Backend integration").
'use strict';
const http = require('http');

// The application's data: sessions, users and project members.
const SESSIONS = {
  'tok-alice': 'alice', 'tok-bob': 'bob', 'tok-mallory': 'mallory', 'tok-dave': 'dave', 'tok-erin': 'erin',
};
const BANNED = new Set(['mallory']);
// Sessions that expire at once (so ringhub asks /refresh at its next tick); erin's was revoked.
const SHORT = new Set(['dave', 'erin']);
const REVOKED = new Set(['erin']);
const PROJECTS = { 1: { name: 'Apollo', members: ['alice', 'bob'] }, 2: { name: 'Gemini', members: ['bob'] } };

function checkProjectAccess(user, projectId) {
  const p = PROJECTS[projectId];
  return Boolean(p && user && p.members.includes(user));
}

// Calls held open on purpose (the `stall` RPC): the test of the proxy timeout.
let stalled = 0;

const routes = {
  // A new connection: who is it? The session token comes as connect data (`?data=...` on the
  // WebSocket URL, or the Socket.IO auth payload `io(url, {auth: {token}})`) or as a `session`
  // cookie.
  '/connect': (req) => {
    const cookie = (req.headers && req.headers.cookie) || '';
    const fromCookie = /(?:^|;\s*)session=([^;]+)/.exec(cookie);
    const token = (req.data && req.data.token) || (fromCookie && fromCookie[1]);
    const user = SESSIONS[token];
    if (!user) return { disconnect: { code: 4401, reason: 'login required' } };
    if (BANNED.has(user)) return { disconnect: { code: 4403, reason: 'banned' } };
    return {
      result: {
        user,
        // Everyone hears announcements; the connection expires in an hour (then /refresh).
        topics: ['announcements'],
        expire_at: Math.floor(Date.now() / 1000) + (SHORT.has(user) ? 0 : 3600),
        meta: { name: user[0].toUpperCase() + user.slice(1) },
        data: { welcome: `hello ${user}` },
      },
    };
  },
  // Before `expire_at`: extend unless the user was banned meanwhile.
  '/refresh': (req) => {
    console.log(`refresh ${req.user}`);
    if (BANNED.has(req.user)) return { disconnect: { code: 4403, reason: 'banned' } };
    if (REVOKED.has(req.user)) return { disconnect: { code: 4401, reason: 'session revoked' } };
    return { result: { expire_at: Math.floor(Date.now() / 1000) + 3600 } };
  },
  // `project:join`: only members subscribe to `project:<id>`.
  '/subscribe': (req) => {
    const m = /^project:(\d+)$/.exec(req.topic);
    if (!m) return { result: {} };
    if (!checkProjectAccess(req.user, m[1])) {
      return { error: { code: 'forbidden', message: `not a member of project ${m[1]}` } };
    }
    return { result: { data: { project: PROJECTS[m[1]].name } } };
  },
  // A comment on a project: only members post, and the backend stamps the author.
  '/publish': (req) => {
    const m = /^project:(\d+)$/.exec(req.topic);
    if (!m) return { result: {} };
    if (!checkProjectAccess(req.user, m[1])) {
      return { error: { code: 'forbidden', message: `not a member of project ${m[1]}` } };
    }
    const data = typeof req.data === 'object' && req.data !== null ? req.data : { text: req.data };
    return { result: { data: { ...data, author: req.user, at: Date.now() } } };
  },
  '/rpc': (req) => {
    switch (req.method) {
      case 'projects.mine':
        return {
          result: {
            data: Object.keys(PROJECTS).filter((id) => checkProjectAccess(req.user, id)).map(Number),
          },
        };
      case 'stall':
        stalled += 1;
        console.log(`stalled ${stalled}`);
        return null; // never answered: ringhub's timeout answers the client
      default:
        return { error: { code: 'bad_request', message: `no method ${req.method}` } };
    }
  },
};

const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/stalled') {
    res.setHeader('Content-Type', 'application/json');
    return res.end(JSON.stringify({ stalled }));
  }
  const route = routes[req.url];
  if (req.method !== 'POST' || !route) {
    res.statusCode = 404;
    return res.end();
  }
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (c) => { body += c; });
  req.on('end', () => {
    let answer;
    try {
      answer = route(JSON.parse(body));
    } catch (e) {
      res.statusCode = 400;
      return res.end(String(e));
    }
    if (answer === null) return; // held open
    res.setHeader('Content-Type', 'application/json');
    res.end(JSON.stringify(answer));
  });
});
server.keepAliveTimeout = 60_000;

const at = process.argv.indexOf('--port');
const port = at > 0 ? Number(process.argv[at + 1]) : 3000;
server.listen(port, '127.0.0.1', () => {
  console.log(`listening ${server.address().port}`);
});
process.on('SIGTERM', () => process.exit(0));
