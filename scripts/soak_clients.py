#!/usr/bin/env python3
"""WebSocket clients for scripts/soak.sh (Python 3 stdlib only; loopback targets only).

    soak_clients.py slow --port P [--tls] [--count N] [--until EPOCH] [--hold 3:8]
    soak_clients.py feed --port P [--tls] [--rate R] [--payload B] [--until EPOCH]
    soak_clients.py wss  --port P [--until EPOCH] [--pause S]

slow: N slow consumers. Each connects with a tiny receive buffer, subscribes to topic `soak`
      (masked frame {"event":"subscribe","topic":"soak","id":1}) and then never reads for a random
      hold time; then it drains what is there (at most 3 s) to see how the server ended it (close
      frame 1008, EOF or reset, or still open), closes, and reconnects; until --until.
feed: one connection publishing R messages/s of B bytes to topic `soak` (what overflows the
      slow consumers' outbound queues); it drains what it receives.
wss:  WebSocket over TLS in a loop: connect, subscribe to `tls`, publish to it (every 4th
      publication --large bytes, default 100,000), wait for the publication to come back intact,
      close with 1000 and wait for the server's close frame.

Every frame read is checked (FIN, no RSV bits, known opcode, text = one JSON object): a stream
that lost or repeated bytes counts as `corrupt`.

Each mode prints one JSON line of counts when it ends; exit status 1 if it never once
succeeded (could not connect / no handshake), else 0.
"""
import argparse
import base64
import json
import os
import random
import select
import socket
import ssl
import struct
import sys
import threading
import time

LOOPBACK = ("127.0.0.1", "localhost", "::1")
TCP_ESTABLISHED = 1


def ctx_tls():
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE  # the soak server's certificate is self-signed
    return c


def connect(host, port, tls, rcvbuf=None, timeout=5.0, path="/ws"):
    """TCP (+TLS) connect and WebSocket upgrade; returns (socket, bytes read past the head)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        # Before connect, so the window stays small: the server's queue fills, not our kernel's.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
        if tls:
            s = ctx_tls().wrap_socket(s, server_hostname="localhost")
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            buf += chunk
            if len(buf) > 16384:
                raise ConnectionError("handshake response too long")
        head, rest = buf.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise ConnectionError(f"upgrade refused: {status.decode(errors='replace')}")
        return s, rest
    except BaseException:
        s.close()
        raise


def frame(opcode, payload):
    """One masked client frame (FIN set)."""
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    mask = os.urandom(4)
    body = bytes(b ^ mask[i & 3] for i, b in enumerate(payload)) if n < 4096 else _mask_fast(payload, mask)
    return head + mask + body


def _mask_fast(payload, mask):
    n = len(payload)
    m = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ m).to_bytes(n, "big")


def text(obj):
    return frame(1, json.dumps(obj, separators=(",", ":")))


def close_frame(code=1000):
    return frame(8, struct.pack("!H", code))


class Reader:
    """Incremental parser of server (unmasked) frames."""

    def __init__(self, sock, initial=b""):
        self.s, self.buf = sock, bytearray(initial)

    def _fill(self):
        chunk = self.s.recv(65536)
        if not chunk:
            raise EOFError
        self.buf += chunk

    def next(self):
        """(opcode, payload); raises EOFError, OSError or socket.timeout."""
        while True:
            b = self.buf
            if len(b) >= 2:
                n, hl = b[1] & 0x7F, 2
                if n == 126 and len(b) >= 4:
                    n, hl = struct.unpack_from("!H", b, 2)[0], 4
                elif n == 127 and len(b) >= 10:
                    n, hl = struct.unpack_from("!Q", b, 2)[0], 10
                if (b[1] & 0x7F) < 126 or hl > 2:
                    if len(b) >= hl + n:
                        op, payload = b[0] & 0x0F, bytes(b[hl : hl + n])
                        self.last_b0 = b[0]
                        del b[: hl + n]
                        return op, payload
            self._fill()


def well_formed(b0, op, payload):
    """Whether a server frame is one the server can send: FIN set, no RSV bits, a known opcode,
    text frames holding one JSON object. A stream that loses or repeats bytes fails this at once."""
    if b0 & 0xF0 != 0x80 or op not in (1, 2, 8, 9, 10):
        return False
    if op == 1:
        try:
            return isinstance(json.loads(payload), dict)
        except ValueError:
            return False
    return True


def tcp_state(s):
    try:
        info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
        return info[0]
    except OSError:
        return -1


def slow_one(a, counts, lock):
    rng = random.Random()
    lo, hi = (float(x) for x in a.hold.split(":"))
    # Stop holding 3.5 s before --until so that the final drain ends by then.
    while time.time() < a.until - 3.5 - lo:
        try:
            s, rest = connect("127.0.0.1", a.port, a.tls, rcvbuf=4096)
        except (OSError, ConnectionError) as e:
            with lock:
                counts["connect_errors"] += 1
                counts["last_error"] = str(e)[:120]
            time.sleep(0.5)
            continue
        outcome = "open"
        try:
            s.sendall(text({"event": "subscribe", "topic": "soak", "id": 1}))
            # Never read while holding: only watch the TCP state (a reset shows up here).
            end = min(time.time() + rng.uniform(lo, hi), a.until - 3.5)
            while time.time() < end and tcp_state(s) == TCP_ESTABLISHED:
                time.sleep(0.2)
            # Now drain (bounded) to learn how the server ended the connection.
            s.settimeout(0.5)
            r, deadline, got_any = Reader(s, rest), time.time() + 3.0, False
            while time.time() < deadline:
                try:
                    op, payload = r.next()
                except socket.timeout:
                    continue
                got_any = True
                if not well_formed(r.last_b0, op, payload):
                    outcome = "corrupt"
                    with lock:
                        counts["last_corrupt"] = f"frame {bytes([r.last_b0])!r} op {op} len {len(payload)}: {payload[:24]!r}"
                    break
                if op == 8:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                    outcome = f"close_{code}"
                    try:
                        s.sendall(close_frame(code if code in (1000, 1008) else 1000))
                    except OSError:
                        pass
                    break
            else:
                outcome = "open" if got_any else "open_silent"
        except EOFError:
            outcome = "eof"
        except (ConnectionResetError, BrokenPipeError):
            outcome = "reset"
        except (OSError, ssl.SSLError) as e:
            outcome = "error"
            with lock:
                counts["last_error"] = str(e)[:120]
        finally:
            s.close()
        with lock:
            counts["cycles"] += 1
            counts[outcome] = counts.get(outcome, 0) + 1


def run_slow(a):
    counts, lock = {"cycles": 0, "connect_errors": 0}, threading.Lock()
    ts = [threading.Thread(target=slow_one, args=(a, counts, lock), daemon=True) for _ in range(a.count)]
    for t in ts:
        t.start()
        time.sleep(0.1)
    for t in ts:
        t.join(max(0.1, a.until - time.time() + 15))
    return counts, counts["cycles"] > 0


def run_feed(a):
    counts = {"sent": 0, "connects": 0, "connect_errors": 0, "received_bytes": 0}
    data = "x" * a.payload
    msg = text({"event": "soak", "topic": "soak", "data": data})

    def drain(s):
        """Reads whatever is waiting without blocking (one thread only: SSL sockets are not
        safe to read and write from two threads). False once the server closed."""
        while select.select([s], [], [], 0)[0] or (a.tls and s.pending()):
            s.settimeout(0.05)
            try:
                chunk = s.recv(65536)
            except (socket.timeout, ssl.SSLWantReadError, BlockingIOError):
                return True
            finally:
                s.settimeout(5.0)
            if not chunk:
                return False
            counts["received_bytes"] += len(chunk)
        return True

    while time.time() < a.until:
        try:
            s, _ = connect("127.0.0.1", a.port, a.tls)
        except (OSError, ConnectionError) as e:
            counts["connect_errors"] += 1
            counts["last_error"] = str(e)[:120]
            time.sleep(0.5)
            continue
        counts["connects"] += 1
        interval, nxt = 1.0 / a.rate, time.time()
        try:
            while time.time() < a.until:
                s.sendall(msg)
                counts["sent"] += 1
                if not drain(s):
                    counts["last_error"] = "server closed the feeder"
                    break
                nxt += interval
                d = nxt - time.time()
                if d > 0:
                    time.sleep(d)
                elif d < -1.0:
                    nxt = time.time()  # open loop, but do not burst to catch up after a stall
            else:
                s.sendall(close_frame())
                time.sleep(0.3)
        except (OSError, ssl.SSLError) as e:
            counts["last_error"] = f"{type(e).__name__}: {e}"[:120]
        s.close()
    return counts, counts["connects"] > 0


def run_wss(a):
    counts = {"ok": 0, "failed": 0, "corrupt": 0, "large_ok": 0}
    i = 0
    while time.time() < a.until - 4:
        i += 1
        # Every 4th publication, the first included (so a short warm-up has one), is larger than
        # 64 KiB (more than rustls buffers by default).
        size = a.large if a.large and i % 4 == 1 else 16
        try:
            s, rest = connect("127.0.0.1", a.port, True)
        except (OSError, ConnectionError) as e:
            counts["failed"] += 1
            counts["last_error"] = str(e)[:120]
            time.sleep(0.5)
            continue
        try:
            s.settimeout(3.0)
            r = Reader(s, rest)
            s.sendall(text({"event": "subscribe", "topic": "tls", "id": 1}))
            while True:
                op, p = r.next()
                if op == 1 and json.loads(p).get("event") == "reply":
                    break
            s.sendall(text({"event": "hello", "topic": "tls", "data": {"n": i, "pad": "x" * size}}))
            while True:
                op, p = r.next()
                if not well_formed(r.last_b0, op, p):
                    raise ValueError(f"corrupt frame after {len(p)} bytes: {p[:24]!r}..{p[-24:]!r}")
                if op == 1:
                    m = json.loads(p)
                    d = m.get("data") or {}
                    if m.get("event") == "hello" and d.get("n") == i:
                        if d.get("pad") != "x" * size:
                            raise ValueError("publication came back altered")
                        break
            s.sendall(close_frame(1000))
            while True:
                op, p = r.next()
                if op == 8:
                    break
            counts["ok"] += 1
            counts["large_ok"] += size > 16
        except ValueError as e:
            counts["corrupt"] += 1
            counts["last_corrupt"] = f"{size} B publication: {e}"[:160]
        except (OSError, ssl.SSLError, EOFError) as e:
            counts["failed"] += 1
            counts["last_error"] = f"{size} B publication: {type(e).__name__}: {e}"[:160]
        finally:
            s.close()
        time.sleep(a.pause)
    return counts, counts["ok"] > 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["slow", "feed", "wss"])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tls", action="store_true")
    p.add_argument("--count", type=int, default=4)
    p.add_argument("--hold", default="3:8", help="slow: seconds without reading, LO:HI (random)")
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--payload", type=int, default=8192)
    p.add_argument("--pause", type=float, default=0.1)
    p.add_argument("--large", type=int, default=100000, help="wss: bytes of every 4th publication (0: none)")
    p.add_argument("--until", type=float, default=time.time() + 10, help="epoch seconds to stop at")
    p.add_argument("--label", default="")
    a = p.parse_args()
    a.until = min(a.until, time.time() + 3600)  # bounded whatever the caller says
    counts, ok = {"slow": run_slow, "feed": run_feed, "wss": run_wss}[a.mode](a)
    print(json.dumps({"client": a.label or a.mode, **counts}), flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
