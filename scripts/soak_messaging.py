#!/usr/bin/env python3
"""Messaging soak workload for scripts/soak-messaging.sh (issue 21). Python 3 stdlib only;
loopback targets only. WebSocket framing comes from soak_clients.py.

    soak_messaging.py --ports P1[,P2] --pids PID1[,PID2] --secret S --key K --duration SECONDS
                      --out PREFIX [--redis-pidfile F] [--warmup 30] [--settle 30]

Runs, concurrently and for --duration seconds (after a --warmup of the same mix):
  durable    USERS users whose clients connect to a random node, receive, ack (some left unacked),
             disconnect (close or abort) and reconnect while senders keep sending durable messages
             to them over the HTTP API. Every message answered 200 must end up received and
             acked (a final drain connects each user until its inbox is empty).
  history    publishes over the API to history topics; subscribers disconnect and resubscribe with
             `since`, checking each offset arrives once, in order, without a gap (`recovered:
             false` and 4010 closes are counted apart, as the protocol allows them).
  presence   clients joining and leaving presence topics; watchers count join/leave events.
  storms     every ~60 s, 8 threads connect+abort for 10 s with the token of a user with pending
             messages (the unacking `victim`, and the tracked user u0).
  redis      with --redis-pidfile: Redis is killed (SIGKILL) every 60-90 s and restarted after 2-5 s
             with its own command line (AOF, appendfsync always: an answered write survives).
Every 5 s it samples each server's RSS and descriptors (/proc), /metrics (connections, frames
out, errors by code) and the latency of a store-backed API call. Writes PREFIX.csv (samples)
and PREFIX-raw.json (counts); scripts/soak_messaging_report.py turns them into a verdict.
"""
import argparse, json, os, random, sys, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from soak_messaging_io import CFG, Ws, api, metrics, proc_rss_fds, restart_redis, upgrade_and_abort  # noqa: E402

A = None
LOCK = threading.Lock()
STOP_LOAD = threading.Event()  # load over: clients stop churning and do their final checks
PHASE = ["warmup"]
C = {}  # counters
T0 = [time.time()]


def inc(k, n=1):
    with LOCK:
        C[k] = C.get(k, 0) + n


# --- durable messages ----------------------------------------------------------------------------
LATENCY = []  # seconds from a durable send's request to the first receipt
USERS = {}  # user -> {"answered": {offset: mid}, "recv": {offset: n}, "acked": set(), "epochs": set()}


def sender(rate):
    n = 0
    while not STOP_LOAD.is_set():
        n += 1
        u = f"u{random.randrange(A.users)}"
        t_req = time.time()
        try:
            st, body = api("POST", "/api/v1/send", {"user": u, "event": "note", "data": {"n": n}, "durable": True})
        except OSError as e:
            inc(f"send_error_{type(e).__name__}")
            time.sleep(0.2)
            continue
        if st == 200:
            d = json.loads(body)["data"]
            with LOCK:
                USERS[u]["answered"][d["offset"]] = d["message_id"]
                USERS[u]["sent_at"][d["offset"]] = t_req
            inc("send_ok")
        else:
            inc(f"send_{st}")
        time.sleep(random.expovariate(rate))


def user_session(u, w, t_end, leave_unacked):
    """Reads until t_end; acks (ack with an id; acked once its reply arrives)."""
    st, pending = USERS[u], {}
    while time.time() < t_end:
        m = w.recv(min(0.5, max(0.05, t_end - time.time())))
        if m is None:
            continue
        ev = m.get("event")
        if ev == "reply" and m.get("id") in pending:
            with LOCK:
                st["acked"].add(pending.pop(m["id"]))
            continue
        if ev == "error":
            inc(f"ack_error_{(m.get('data') or {}).get('code')}")
            pending.pop(m.get("id"), None)
            continue
        if m.get("ack") and "offset" in m:
            o = m["offset"]
            with LOCK:
                if m.get("epoch"):
                    st["epochs"].add(m["epoch"])
                seen = st["recv"].get(o, 0)
                st["recv"][o] = seen + 1
                if not seen:
                    st["recv_at"][o] = time.time()
                if o in st["acked"]:
                    C["dup_after_ack"] = C.get("dup_after_ack", 0) + 1
                    st.setdefault("dup_after_ack", []).append({"offset": o, "t": round(time.time() - T0[0], 1)})
                elif seen:
                    C["redelivered_unacked"] = C.get("redelivered_unacked", 0) + 1
                C["durable_received"] = C.get("durable_received", 0) + 1
            if leave_unacked and random.random() < 0.3:
                continue  # this one stays pending: it must come again
            aid = random.getrandbits(40)
            pending[aid] = o
            w.send({"event": "ack", "topic": f"user:{u}", "data": {"offset": o}, "id": aid})
    return pending


def durable_user(u):
    while not STOP_LOAD.is_set():
        try:
            w = Ws(u)
        except (OSError, ConnectionError) as e:
            inc(f"durable_connect_error")
            time.sleep(0.5)
            continue
        inc("durable_connects")
        abort = random.random() < 0.4
        try:
            user_session(u, w, time.time() + random.uniform(2, 10), leave_unacked=random.random() < 0.3)
        except (OSError, EOFError, ValueError) as e:
            inc(f"durable_conn_lost_{w.close_code or type(e).__name__}")
        w.close(abort=abort)
        time.sleep(random.uniform(0.3, 4))  # away while messages are pending
    # Final drain: connect until every answered message was received and the server's inbox of
    # the user is empty (an ack whose reply was cut off by a disconnect may still have counted).
    deadline = time.time() + A.settle + 60
    while time.time() < deadline:
        with LOCK:
            unseen = set(USERS[u]["answered"]) - set(USERS[u]["recv"])
        if not unseen and not inbox(u):
            break
        try:
            w = Ws(u)
            user_session(u, w, time.time() + 3, leave_unacked=False)
            w.close()
        except (OSError, EOFError, ValueError, ConnectionError):
            time.sleep(0.5)


def inbox(u):
    """The offsets of the user's unacknowledged messages, as the server lists them."""
    try:
        st, body = api("GET", f"/api/v1/inbox?user={u}")
        if st == 200:
            return [m["offset"] for m in json.loads(body)["data"]["messages"]]
    except (OSError, ValueError, KeyError):
        pass
    return ["?"]


# --- history -------------------------------------------------------------------------------------
TOPICS = {}  # topic -> {"answered": set(offsets), "seen": set(offsets)}


def publisher(rate):
    n = 0
    while not STOP_LOAD.is_set():
        n += 1
        t = f"hist:{random.randrange(A.topics)}"
        try:
            st, body = api("POST", "/api/v1/publish", {"topic": t, "event": "h", "data": {"n": n}})
        except OSError as e:
            inc(f"publish_error_{type(e).__name__}")
            time.sleep(0.2)
            continue
        if st == 200:
            o = json.loads(body)["data"].get("offset")
            with LOCK:
                TOPICS[t]["answered"].add(o)
            inc("publish_ok")
        else:
            inc(f"publish_{st}")
        time.sleep(random.expovariate(rate))


class Follower:
    """One history subscriber's view of a topic: the last offset, checked on every publication."""

    def __init__(self, topic, i):
        self.topic, self.epoch, self.last, self.i, self.port = topic, None, None, i, None

    def take(self, o, how=None):
        with LOCK:
            TOPICS[self.topic]["seen"].add(o)
        if self.last is None:
            self.last = o
        elif o == self.last + 1:
            self.last = o
        elif o > self.last + 1:
            self.gap(o, "live" if how is None else how)
            self.last = o
        else:
            inc("history_dup_or_reorder")
            self.note("dup_or_reorder", o, how or "live")

    def note(self, kind, o, how):
        with LOCK:
            C.setdefault("history_detail", []).append(
                {"kind": kind, "t": round(time.time() - T0[0], 1), "topic": self.topic, "sub": self.i,
                 "port": self.port, "last": self.last, "got": o, "how": how})

    def gap(self, o, how):
        inc("history_gaps")
        inc("history_gap_offsets", o - self.last - 1)
        self.note("gap", o, how)

    def subscribe(self, w):
        sub = {"event": "subscribe", "topic": self.topic, "id": 1}
        if self.epoch is not None:
            sub["data"] = {"since": {"epoch": self.epoch, "offset": self.last}}
        w.send(sub)
        live = []
        while True:
            m = w.recv(10)
            if m is None:
                raise OSError("no subscribe reply in 10 s")
            if m.get("event") == "reply" and m.get("id") == 1:
                break
            if m.get("event") == "error" and m.get("id") == 1:
                inc(f"history_sub_error_{(m.get('data') or {}).get('code')}")
                raise OSError("subscribe refused")
            if "offset" in m:
                live.append(m["offset"])
        d = m.get("data") or {}
        resumed = self.epoch is not None
        if resumed and d.get("epoch") != self.epoch:
            inc("history_epoch_changes")
        paged = False
        pubs = [p["offset"] for p in d.get("publications", [])]
        nxt = d.get("next") if d.get("more") else None
        while nxt:  # paged recovery: fetch the rest; live ones may come meanwhile
            paged = True
            inc("history_pages")
            w.send({"event": "history", "topic": self.topic, "id": 2, "data": nxt})
            while True:
                m = w.recv(10)
                if m is None:
                    raise OSError("no history reply in 10 s")
                if m.get("id") == 2:
                    break
                if "offset" in m:
                    live.append(m["offset"])
            pd = m.get("data") or {}
            pubs += [p["offset"] for p in pd.get("publications", [])]
            nxt = pd.get("next") if pd.get("more") else None
        self.epoch = d.get("epoch")
        if resumed and d.get("recovered"):
            inc("history_recoveries")
            cand = pubs + live
            if not paged and len(cand) != len(set(cand)):
                inc("history_dup_or_reorder")
        else:
            if resumed:
                inc("history_unrecoverable")  # documented: the client reloads its state
            self.last, cand = d.get("offset"), live
            if not resumed:
                with LOCK:  # publications before the first subscribe are not checked
                    T = TOPICS[self.topic]
                    T["from"] = d["offset"] if not T.get("subscribed") else min(T["from"], d["offset"])
                    T["subscribed"] = True
        for o in sorted(set(cand)):
            if o > self.last:
                self.take(o, "recovery" if resumed else "after_subscribe")
        if self.last < d.get("offset", 0):  # the recovery stopped short of the reply's offset
            self.gap(d["offset"] + 1, "recovery_short")
            self.last = d["offset"]

    def on_message(self, m):
        if m.get("topic") == self.topic and "offset" in m:
            self.take(m["offset"])
            inc("history_live")


def history_subscriber(i):
    f = Follower(f"hist:{i % A.topics}", i)
    final = False
    while True:
        if STOP_LOAD.is_set():
            final = True
        try:
            w = Ws(f"h{i}")
        except (OSError, ConnectionError):
            inc("history_connect_error")
            time.sleep(0.5)
            continue
        f.port = w.port
        try:
            f.subscribe(w)
            t_end = time.time() + (3 if final else random.uniform(3, 15))
            while time.time() < t_end:
                m = w.recv(0.5)
                if m:
                    f.on_message(m)
        except EOFError:
            inc(f"history_closed_{w.close_code}")
            f.note(f"closed_{w.close_code}", None, "")
        except (OSError, ValueError) as e:
            inc(f"history_conn_lost_{type(e).__name__}")
        w.close(abort=random.random() < 0.5)
        if final:
            with LOCK:
                top = max(TOPICS[f.topic]["answered"] | {0})
            with LOCK:
                C.setdefault("history_final", []).append({"sub": i, "topic": f.topic, "last": f.last, "top_answered": top})
            return
        time.sleep(random.uniform(0.3, 5))


# --- presence ------------------------------------------------------------------------------------
def presence_client(i):
    while not STOP_LOAD.is_set():
        t = f"pres:{random.randrange(3)}"
        try:
            w = Ws(f"p{i}")
            w.send({"event": "subscribe", "topic": t, "id": 1})
            t_end = time.time() + random.uniform(0.5, 5)
            asked = False
            while time.time() < t_end:
                if not asked and random.random() < 0.2:
                    w.send({"event": "presence_stats", "topic": t, "id": 2})
                    asked = True
                m = w.recv(0.3)
                if m and m.get("event") == "error":
                    inc(f"presence_error_{(m.get('data') or {}).get('code')}")
            if random.random() < 0.5:
                w.send({"event": "unsubscribe", "topic": t})
            w.close(abort=random.random() < 0.5)
            inc("presence_cycles")
        except (OSError, EOFError, ValueError, ConnectionError):
            inc("presence_conn_lost")
        time.sleep(random.uniform(0, 0.5))


def presence_watcher(k):
    t = f"pres:{k}"
    while not STOP_LOAD.is_set():
        try:
            w = Ws(f"watch{k}")
            w.send({"event": "subscribe", "topic": t, "id": 1})
            while not STOP_LOAD.is_set():
                m = w.recv(0.5)
                if m and m.get("event") in ("join", "leave"):
                    inc(f"presence_{m['event']}_events")
            w.close()
        except (OSError, EOFError, ValueError, ConnectionError):
            inc("presence_watcher_reconnects")
            time.sleep(0.5)


# --- storms, Redis, sampling ---------------------------------------------------------------------
STORMS, RESTARTS = [], []


def storm_loop(t0):
    nxt = time.time() + 20
    while not STOP_LOAD.wait(max(0, nxt - time.time())):
        t_s, stop = time.time(), time.time() + 10
        made = [0]

        def one(j):
            while time.time() < stop and not STOP_LOAD.is_set():
                try:
                    if upgrade_and_abort("victim" if j % 2 else "u0", random.choice(A.ports)):
                        with LOCK:
                            made[0] += 1
                except OSError:
                    inc("storm_errors")

        ts = [threading.Thread(target=one, args=(j,)) for j in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        STORMS.append({"start": t_s - t0, "end": time.time() - t0, "connections": made[0]})
        nxt = t_s + 60


def redis_loop(t0):
    nxt = time.time() + random.uniform(30, 60)
    while not STOP_LOAD.wait(max(0, nxt - time.time())):
        t_k = time.time()
        restart_redis(A.redis_pidfile, random.uniform(2, 5))
        RESTARTS.append({"killed": t_k - t0, "started": time.time() - t0})
        nxt = time.time() + random.uniform(60, 90)


def sampler(t0, csvf, stop):
    probe_mid = None
    while not stop.is_set():
        row = {"t": round(time.time() - t0, 1), "phase": PHASE[0]}
        if probe_mid is None:
            with LOCK:
                mids = [m for s in USERS.values() for m in s["answered"].values()]
            probe_mid = mids[0] if mids else None
        for j, (port, pid) in enumerate(zip(A.ports, A.pids)):
            rss, fds = proc_rss_fds(pid)
            row[f"n{j}_rss_kb"], row[f"n{j}_fds"] = rss, fds
            m = metrics(port)
            row[f"n{j}_conns"] = m["connections"] if m else -1
            row[f"n{j}_frames_out"] = m["messages_out"] if m else -1
            row[f"n{j}_errors"] = "|".join(f"{k}={v}" for k, v in sorted((m or {}).get("errors", {}).items()))
            t = time.monotonic()
            ok = 0
            if probe_mid is not None:
                try:
                    ok = api("GET", f"/api/v1/messages/{probe_mid}", port=port, timeout=10)[0]
                except OSError:
                    ok = -1
            row[f"n{j}_probe_ms"] = round((time.monotonic() - t) * 1000, 1)
            row[f"n{j}_probe_status"] = ok
        row["redis_up"] = int(not A.redis_pidfile or os.path.exists(f"/proc/{open(A.redis_pidfile).read().strip()}"))
        with LOCK:
            row["sent_ok"], row["acked"] = C.get("send_ok", 0), sum(len(s["acked"]) for s in USERS.values())
            row["published_ok"] = C.get("publish_ok", 0)
        if csvf.tell() == 0:
            csvf.write(",".join(row) + "\n")
        csvf.write(",".join(str(v) for v in row.values()) + "\n")
        csvf.flush()
        stop.wait(5)


def pct(xs, q):
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(len(xs) * q / 100))], 2) if xs else None


def main():
    global A
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ports", required=True)
    p.add_argument("--pids", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--duration", type=float, default=600)
    p.add_argument("--warmup", type=float, default=30)
    p.add_argument("--settle", type=float, default=30)
    p.add_argument("--users", type=int, default=16)
    p.add_argument("--topics", type=int, default=4)
    p.add_argument("--history-subs", type=int, default=8)
    p.add_argument("--presence", type=int, default=24)
    p.add_argument("--send-rate", type=float, default=20)
    p.add_argument("--publish-rate", type=float, default=20)
    p.add_argument("--redis-pidfile")
    p.add_argument("--out", required=True)
    A = p.parse_args()
    A.ports = [int(x) for x in A.ports.split(",")]
    A.pids = [int(x) for x in A.pids.split(",")]
    CFG.update(secret=A.secret, key=A.key, ports=A.ports)
    for i in range(A.users):
        USERS[f"u{i}"] = {"answered": {}, "recv": {}, "acked": set(), "epochs": set(), "sent_at": {}, "recv_at": {}}
    for k in range(A.topics):
        TOPICS[f"hist:{k}"] = {"answered": set(), "seen": set(), "from": 0}
    # The storm's victim: 300 pending messages it never acknowledges.
    for n in range(300):
        st, _ = api("POST", "/api/v1/send", {"user": "victim", "event": "note", "data": {"n": n, "pad": "x" * 1000}, "durable": True})
        if st != 200:
            inc(f"victim_send_{st}")
    t0 = T0[0] = time.time()
    stop_sampling = threading.Event()
    csvf = open(A.out + ".csv", "w")
    samp = threading.Thread(target=sampler, args=(t0, csvf, stop_sampling), daemon=True)
    samp.start()
    time.sleep(5.5)  # a baseline sample (after the victim's inbox was filled)
    work = [threading.Thread(target=sender, args=(A.send_rate / 2,)) for _ in range(2)]
    work += [threading.Thread(target=publisher, args=(A.publish_rate,))]
    work += [threading.Thread(target=durable_user, args=(u,)) for u in USERS]
    work += [threading.Thread(target=history_subscriber, args=(i,)) for i in range(A.history_subs)]
    work += [threading.Thread(target=presence_client, args=(i,)) for i in range(A.presence)]
    work += [threading.Thread(target=presence_watcher, args=(k,)) for k in range(3)]
    work += [threading.Thread(target=storm_loop, args=(t0,))]
    if A.redis_pidfile:
        work += [threading.Thread(target=redis_loop, args=(t0,))]
    t_warm = time.time() - t0
    for t in work:
        t.daemon = True
        t.start()
    time.sleep(A.warmup)
    PHASE[0] = "load"
    t_load = time.time() - t0
    time.sleep(A.duration)
    STOP_LOAD.set()
    PHASE[0] = "drain"
    t_end = time.time() - t0
    for t in work:
        t.join(A.settle + 120)
    PHASE[0] = "settle"
    t_drained = time.time() - t0
    time.sleep(A.settle)
    stop_sampling.set()
    samp.join()
    # Presence after everyone left (a cluster's entries are eventually consistent).
    pres = {}
    for k in range(3):
        for port in A.ports:
            try:
                st, body = api("POST", "/api/v1/presence", {"topic": f"pres:{k}"}, port=port)
                pres[f"pres:{k}@{port}"] = len(json.loads(body)["data"]["clients"]) if st == 200 else f"status {st}"
            except (OSError, ValueError, KeyError) as e:
                pres[f"pres:{k}@{port}"] = str(e)
    for s in USERS.values():  # a send may be received before its answer reached the sender
        LATENCY.extend(max(0.0, s["recv_at"][o] - t) for o, t in s["sent_at"].items() if o in s["recv_at"])
    lost, unacked = {}, {}
    for u, s in USERS.items():
        for o in sorted(set(s["answered"]) - set(s["recv"])):
            mid = s["answered"][o]
            try:
                st, body = api("GET", f"/api/v1/messages/{mid}")
                status = json.loads(body).get("data", {}).get("status") if st == 200 else st
            except (OSError, ValueError):
                status = "?"
            lost.setdefault(u, []).append({"offset": o, "message_id": mid, "status": status})
        left = inbox(u)
        if left:
            unacked[u] = left[:20]
    topics = {}
    for t, s in TOPICS.items():
        after = {o for o in s["answered"] if o > s["from"]}
        topics[t] = {"answered": len(s["answered"]), "checked_from_offset": s["from"],
                     "answered_not_seen": sorted(after - s["seen"])[:50],
                     "seen_not_answered": len(s["seen"] - s["answered"])}
    raw = {
        "t_warmup_start": t_warm, "t_load_start": t_load, "t_load_end": t_end, "t_drained": t_drained,
        "counters": {k: v for k, v in C.items() if not isinstance(v, list)},
        "history_final": C.get("history_final", []), "history_detail": C.get("history_detail", [])[:200],
        "durable": {
            "answered": sum(len(s["answered"]) for s in USERS.values()),
            "acked": sum(len(s["acked"] & set(s["answered"])) for s in USERS.values()),
            "received": sum(len(set(s["recv"]) & set(s["answered"])) for s in USERS.values()),
            "first_receipt_s": {"n": len(LATENCY), "p50": pct(LATENCY, 50), "p99": pct(LATENCY, 99),
                                "max": pct(LATENCY, 100), "over_15s": sum(1 for x in LATENCY if x > 15)},
            "received_not_answered": sum(len(set(s["recv"]) - set(s["answered"])) for s in USERS.values()),
            "epochs": sorted({e for s in USERS.values() for e in s["epochs"]}),
            "lost": lost, "unacked_at_end": unacked,
            "dup_after_ack": {u: s.get("dup_after_ack", [])[:20] for u, s in USERS.items() if s.get("dup_after_ack")},
        },
        "topics": topics, "presence_after": pres, "storms": STORMS, "redis_restarts": RESTARTS,
    }
    json.dump(raw, open(A.out + "-raw.json", "w"), indent=1)
    print(json.dumps({"durable": {k: raw["durable"][k] for k in ("answered", "received", "acked", "received_not_answered", "unacked_at_end")},
                      "lost": sum(len(v) for v in lost.values()), "counters": raw["counters"]}))


if __name__ == "__main__":
    main()
