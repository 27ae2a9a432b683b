#!/usr/bin/env python3
"""Helpers of scripts/soak_messaging.py (stdlib only): HS256 tokens, the HTTP API, a blocking
WebSocket client, a Redis restart, and the /proc and /metrics samples."""
import base64, hashlib, hmac, http.client, json, os, random, signal, socket, struct, subprocess, time

from soak_clients import Reader, close_frame, connect, frame, text

CFG = {"secret": "", "key": "", "ports": []}  # set by soak_messaging.py


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=")


def token(user):
    h = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    p = b64(json.dumps({"sub": user, "exp": int(time.time()) + 7200}).encode())
    s = b64(hmac.new(CFG["secret"].encode(), h + b"." + p, hashlib.sha256).digest())
    return (h + b"." + p + b"." + s).decode()


def api(method, path, body=None, port=None, timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", port or random.choice(CFG["ports"]), timeout=timeout)
    try:
        c.request(method, path, body=json.dumps(body) if body is not None else None,
                  headers={"Authorization": f"Bearer {CFG['key']}", "Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


class Ws:
    """One client connection: blocking socket, reads with a short timeout, answers pings."""

    def __init__(self, user, port=None):
        self.port = port or random.choice(CFG["ports"])
        self.s, rest = connect("127.0.0.1", self.port, False, path=f"/ws?token={token(user)}")
        self.r = Reader(self.s, rest)
        self.close_code = None

    def send(self, obj):
        self.s.sendall(text(obj))

    def recv(self, timeout):
        """A JSON message, None on timeout; raises EOFError when the server closed."""
        self.s.settimeout(timeout)
        while True:
            try:
                op, p = self.r.next()
            except socket.timeout:
                return None
            if op == 9:
                self.s.sendall(frame(10, p))
            elif op == 8:
                self.close_code = struct.unpack("!H", p[:2])[0] if len(p) >= 2 else 1005
                raise EOFError
            elif op == 1:
                return json.loads(p)

    def close(self, abort=False):
        try:
            if abort:
                self.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                self.s.sendall(close_frame(1000))
        except OSError:
            pass
        self.s.close()


def upgrade_and_abort(user, port):
    """One storm connection: upgrade, read the 101, abort with RST. True if it was upgraded."""
    req = (f"GET /ws?token={token(user)} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           "Sec-WebSocket-Version: 13\r\n\r\n").encode()
    s = socket.socket()
    try:
        s.settimeout(5)
        s.connect(("127.0.0.1", port))
        s.sendall(req)
        return s.recv(4096).startswith(b"HTTP/1.1 101")
    finally:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()


def restart_redis(pidfile, down_s):
    """SIGKILL the redis-server named by pidfile, wait down_s, start it again with the command
    line soak-messaging.sh wrote to argv.json beside it; the pidfile then names the new one."""
    pid = int(open(pidfile).read())
    cwd = os.path.dirname(os.path.abspath(pidfile))
    argv = json.load(open(os.path.join(cwd, "argv.json")))
    os.kill(pid, signal.SIGKILL)
    while os.path.exists(f"/proc/{pid}") and "Z" not in open(f"/proc/{pid}/stat").read().split()[2]:
        time.sleep(0.05)
    time.sleep(down_s)
    log = open(os.path.join(cwd, "redis.log"), "ab")
    p = subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=log, start_new_session=True)
    with open(pidfile + ".tmp", "w") as f:
        f.write(str(p.pid))
    os.replace(pidfile + ".tmp", pidfile)


def proc_rss_fds(pid):
    try:
        rss = next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS:"))
        return rss, len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration):
        return 0, 0


def metrics(port):
    out = {"connections": 0, "messages_out": 0, "errors": {}}
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
        c.request("GET", "/metrics")
        body = c.getresponse().read().decode()
        c.close()
    except OSError:
        return None
    for line in body.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, v = line.rpartition(" ")
        if name.startswith("ringhub_connections{"):
            out["connections"] += int(float(v))
        elif name.startswith("ringhub_messages_out"):
            out["messages_out"] += int(float(v))
        elif name.startswith("ringhub_errors_total{"):
            code = name.split('code="', 1)[1].split('"', 1)[0]
            out["errors"][code] = out["errors"].get(code, 0) + int(float(v))
    return out
