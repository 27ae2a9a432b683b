#!/usr/bin/env python3
"""Reconnect storm against one ringhub (issue 21, item 1): USER gets PENDING unacknowledged
1 KiB durable messages, then LOOPS threads connect with USER's valid token (upgrade, read the
101, abort with RST) for DURATION seconds. Meanwhile RSS is sampled every 50 ms and a
store-backed API call (GET /api/v1/messages/ID) is probed every 100 ms. Prints one line:
baseline and peak RSS, peak above baseline, RSS 5 s after the storm, connections made, probes,
max probe latency, probe failures."""
import base64, hashlib, hmac, json, socket, struct, sys, threading, time, http.client

port, pid, secret, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
pending, loops, duration = int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7])
USER = "victim"

def b64(b): return base64.urlsafe_b64encode(b).rstrip(b"=")
def token(user):
    h = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    p = b64(json.dumps({"sub": user, "exp": int(time.time()) + 3600}).encode())
    s = b64(hmac.new(secret.encode(), h + b"." + p, hashlib.sha256).digest())
    return (h + b"." + p + b"." + s).decode()

def api(method, path, body=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request(method, path, body=json.dumps(body) if body is not None else None,
              headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    r = c.getresponse(); data = r.read(); c.close()
    return r.status, data

def rss_kb():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"): return int(line.split()[1])
    return 0

first = None
pad = "x" * 1000
for n in range(pending):
    st, data = api("POST", "/api/v1/send", {"user": USER, "event": "note", "data": {"n": n, "pad": pad}, "durable": True})
    assert st == 200, (st, data)
    if first is None: first = json.loads(data)["data"]["message_id"]

time.sleep(1)
baseline = rss_kb()
tok = token(USER)
req = (f"GET /ws?token={tok} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
stop = threading.Event(); made = [0] * loops; refused = [0] * loops

def storm(i):
    while not stop.is_set():
        s = socket.socket()
        try:
            s.settimeout(5); s.connect(("127.0.0.1", port)); s.sendall(req)
            buf = b""
            while b"\r\n\r\n" not in buf:
                d = s.recv(4096)
                if not d: break
                buf += d
            if buf.startswith(b"HTTP/1.1 101"): made[i] += 1
            else: refused[i] += 1
        except OSError:
            refused[i] += 1
        finally:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)); s.close()

peak = [baseline]; lat = []; fails = [0]
def sampler():
    while not stop.is_set():
        peak[0] = max(peak[0], rss_kb()); time.sleep(0.05)
def prober():
    while not stop.is_set():
        t = time.monotonic()
        try:
            st, _ = api("GET", f"/api/v1/messages/{first}")
            if st != 200: fails[0] += 1
        except OSError:
            fails[0] += 1
        lat.append(time.monotonic() - t); time.sleep(0.1)

ts = [threading.Thread(target=storm, args=(i,)) for i in range(loops)] + [threading.Thread(target=sampler), threading.Thread(target=prober)]
for t in ts: t.start()
time.sleep(duration); stop.set()
for t in ts: t.join()
time.sleep(5)
after = rss_kb()
print(f"baseline_rss_mb={baseline/1024:.1f} peak_rss_mb={peak[0]/1024:.1f} peak_above_baseline_mb={(peak[0]-baseline)/1024:.1f} "
      f"rss_after_5s_mb={after/1024:.1f} connections={sum(made)} refused={sum(refused)} probes={len(lat)} "
      f"max_probe_ms={max(lat)*1000:.0f} probe_failures={fails[0]}")
