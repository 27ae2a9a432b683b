#!/usr/bin/env python3
"""Condenses a measurement campaign (many scripts/compare.sh result directories) into one JSON
file with every run's key numbers and one markdown file with median tables and within-run ratios.

    scripts/condense.py CAMPAIGN_DIR [-o OUT.json] [--md OUT.md] [--ref bun,uws] [--title T]

CAMPAIGN_DIR holds compare.sh result directories (each with NAME.json per server), laid out
either as scripts/campaign.sh writes them (SCENARIO_ID/run-N/) or as the earlier campaigns did
(SCENARIO_ID-N/). Runs of one scenario are grouped by SCENARIO_ID; N is the run number.
If CAMPAIGN_DIR/campaign.json exists (campaign.sh writes it) its metadata, scenario order and
exact commands are copied; otherwise a scenario's command is taken from the `scenario:` line of
the run's printed table (RUN/table.txt, RUN.table or RUN/table) when there is one.

Per run and server: msgs/s, p50, p99 (µs), server CPU s, server CPU ns per message (CPU s over
the whole loadtest run ÷ messages delivered, echoed or handshakes), peak RSS (VmHWM, kB),
loadtest CPU share of its core (LT CPU), RSS growth per connection (idle), ok/failures, and
(compare.sh runs since PRIO/other-load support) the share of the busier of the two cores that
anything else used during the run ("other").
Ratios are taken WITHIN a run (server ÷ reference in the same run), then the median over runs.
No third-party dependencies.
"""
import argparse
import json
import os
import re
import statistics as st
import sys

# The number helpers every condenser shares.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from median import f_rate, f_us, med  # noqa: E402

ORDER = ["ringhub", "ringhub-uring", "ringhub-epoll", "bun", "uws", "node-ws", "tungstenite"]


def natural(s):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def server_rank(name):
    return (ORDER.index(name), name) if name in ORDER else (len(ORDER), name)


def load_json(p):
    try:
        with open(p) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def work_count(j):
    c = j.get("counts") or {}
    for k in ("delivered", "received", "ok"):
        v = c.get(k)
        if isinstance(v, (int, float)) and v:
            return v
    return None


def rnd(v, nd=1):
    return None if v is None else round(v, nd)


def record(j):
    """The key numbers of one server's result in one run."""
    srv = j.get("server") or {}
    lat = j.get("latency_us") or {}
    cpu = srv.get("cpu_s")
    n = work_count(j)
    r = {
        "msgs_per_s": rnd(j.get("msgs_per_s"), 0),
        "p50_us": rnd(lat.get("p50")),
        "p99_us": rnd(lat.get("p99")),
        "server_cpu_s": rnd(cpu, 2),
        "cpu_ns_per_msg": rnd(cpu / n * 1e9, 0) if cpu is not None and n else None,
        "peak_rss_kb": srv.get("hwm_kb"),
        "lt_cpu": rnd(j["loadtest_cpu_s"] / j["loadtest_wall_s"], 3)
        if j.get("loadtest_wall_s") else None,
        "ok": j.get("ok", True),
    }
    ol = (j.get("machine") or {}).get("other_load")
    if ol:
        r["other_load"] = rnd(max(ol.get("server_core", 0), ol.get("loadtest_core", 0)), 3)
    if (j.get("machine") or {}).get("prio"):
        r["prio"] = j["machine"]["prio"]
    if j.get("rss_per_conn_kb") is not None:
        r["rss_per_conn_kb"] = j["rss_per_conn_kb"]
    if j.get("published_per_s") is not None and j.get("config", {}).get("rate") is not None:
        r["published_per_s"] = rnd(j.get("published_per_s"), 1)
        r["max_send_lag_us"] = j.get("max_send_lag_us")
        if (j.get("send_lag_us") or {}).get("p99") is not None:
            r["send_lag_p99_us"] = rnd(j["send_lag_us"]["p99"])
    c = j.get("counts") or {}
    for k in ("missing", "duplicates", "disconnects", "failed"):
        if c.get(k):
            r[k] = c[k]
    if j.get("failures"):
        r["failures"] = j["failures"][:3]
    if srv.get("loadtest_exit"):
        r["loadtest_exit"] = srv["loadtest_exit"]
    return {k: v for k, v in r.items() if v is not None}


def table_command(run_dir):
    for p in (os.path.join(run_dir, "table.txt"), run_dir + ".table", os.path.join(run_dir, "table")):
        try:
            with open(p) as f:
                for line in f:
                    if line.startswith("scenario: "):
                        return line[len("scenario: "):].strip()
        except OSError:
            pass
    return None


def find_runs(root):
    """[(group_id, run_no, run_dir)] for every directory that holds compare.sh results."""
    out = []
    for d, dirs, files in os.walk(root):
        dirs.sort(key=natural)
        results = [f for f in files if f.endswith(".json") and f != "campaign.json"]
        if not any((load_json(os.path.join(d, f)) or {}).get("scenario") for f in results):
            continue
        rel = os.path.relpath(d, root)
        head, last = os.path.split(rel)
        m = re.fullmatch(r"run-?(\d+)", last)
        if m and head:
            out.append((head, int(m.group(1)), d))
            continue
        m = re.fullmatch(r"(.+)-(\d+)", rel)
        if m:
            out.append((m.group(1), int(m.group(2)), d))
        else:
            out.append((rel, 1, d))
    return out




def ratio_metrics(scenario):
    if scenario == "idle":
        return [("rss_per_conn_kb", "RSS/conn")]
    return [("msgs_per_s", "msgs/s"), ("p99_us", "p99"), ("cpu_ns_per_msg", "CPU/msg")]


def condense(root, refs, meta):
    groups = {}
    for gid, n, d in find_runs(root):
        g = groups.setdefault(gid, {"id": gid, "runs": []})
        servers = {}
        for f in sorted(os.listdir(d)):
            if not f.endswith(".json") or f == "campaign.json":
                continue
            j = load_json(os.path.join(d, f))
            if not j or not j.get("scenario"):
                continue
            name = f[:-5]
            servers[name] = record(j)
            g.setdefault("scenario", j["scenario"])
            g.setdefault("config", j.get("config"))
        g["runs"].append({"run": n, "dir": os.path.relpath(d, root),
                          "servers": dict(sorted(servers.items(), key=lambda kv: server_rank(kv[0])))})
        if "command" not in g:
            cmd = table_command(d)
            if cmd:
                g["command"] = cmd
    order = [s["id"] for s in meta.get("scenarios", [])]
    cmds = {s["id"]: s for s in meta.get("scenarios", [])}
    out = []
    for gid in sorted(groups, key=lambda k: (order.index(k) if k in order else len(order), natural(k))):
        g = groups[gid]
        g["runs"].sort(key=lambda r: r["run"])
        if gid in cmds:
            g["command"] = cmds[gid].get("command")
            if cmds[gid].get("title"):
                g["title"] = cmds[gid]["title"]
        names = sorted({n for r in g["runs"] for n in r["servers"]}, key=server_rank)
        medians = {}
        for n in names:
            rs = [r["servers"].get(n) for r in g["runs"]]
            m = {}
            for k in ("msgs_per_s", "p50_us", "p99_us", "server_cpu_s", "cpu_ns_per_msg",
                      "peak_rss_kb", "lt_cpu", "rss_per_conn_kb", "other_load"):
                v = med([x.get(k) for x in rs if x])
                if v is not None:
                    m[k] = round(v, 3)
            m["runs"] = sum(1 for x in rs if x)
            m["not_ok"] = sum(1 for x in rs if x and not x.get("ok", True))
            medians[n] = m
        g["median"] = medians
        ratios = {}
        for ref in refs:
            if ref not in names:
                continue
            per = {}
            for n in names:
                if n == ref:
                    continue
                pm = {}
                for k, _ in ratio_metrics(g.get("scenario")):
                    runs = []
                    for r in g["runs"]:
                        a, b = r["servers"].get(n, {}).get(k), r["servers"].get(ref, {}).get(k)
                        runs.append(round(a / b, 3) if a is not None and b else None)
                    if any(x is not None for x in runs):
                        pm[k] = {"median": round(med(runs), 3), "runs": runs}
                if pm:
                    per[n] = pm
            ratios[ref] = per
        g["ratios_within_run"] = ratios
        out.append(g)
    return out






def f_x(v):
    return "–" if v is None else f"{v:.2f}"


def markdown(title, meta, groups, refs, json_name):
    L = [f"# {title}", ""]
    if meta:
        L.append("Written by `scripts/condense.py` from the campaign's raw results; every run's "
                 f"numbers are in `{json_name}`.")
        L.append("")
        env = meta.get("env") or {}
        rows = [(k, env[k]) for k in env]
        for k in ("started", "finished", "runs", "servers", "commit"):
            if meta.get(k) is not None:
                rows.append((k, meta[k]))
        if rows:
            L += ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows] + [""]
        if meta.get("commands"):
            L += ["```sh"] + meta["commands"] + ["```", ""]
    else:
        L += [f"Condensed by `scripts/condense.py`; every run's numbers are in `{json_name}`.", ""]
    L += ["Cells are medians over the runs (each run's value in brackets). CPU/msg = server CPU "
          "(utime+stime over the whole loadtest run: connect, warm-up, measure, drain) ÷ messages "
          "delivered/echoed (per handshake for connect). LT CPU = the load generator's share of its "
          "core (near 100%: the generator may be the limit). other = the larger of the two cores' "
          "(server's, generator's) share used by other tasks during the run: without PRIO=rt a "
          "high value means the run was disturbed (wake-ups of the server and the generator waited "
          "behind other tasks; closed-loop rates dropped 3× that way); with PRIO=rt other tasks "
          "only get the time the server and the generator leave idle. Ratios are server ÷ "
          "reference taken within each run, then the median.", ""]
    for g in groups:
        head = g.get("title") or g["id"]
        L.append(f"## {head}")
        L.append("")
        if g.get("command"):
            L += [f"`{g['command']}`", ""]
        names = list(g["median"])
        idle = g.get("scenario") == "idle"
        cols = ["server", "msgs/s (runs)", "p50", "p99", "CPU/msg ns", "peak RSS", "LT CPU"]
        if idle:
            cols = ["server", "RSS/conn kB (runs)", "peak RSS", "LT CPU"]
        has_other = any("other_load" in m for m in g["median"].values())
        prios = sorted({x.get("prio") for r in g["runs"] for x in r["servers"].values() if x.get("prio")})
        if prios:
            L += [f"PRIO: {', '.join(prios)}", ""]
        if has_other:
            cols.append("other")
        active = [r for r in refs if r in g["ratios_within_run"]]
        for ref in active:
            for _, lab in ratio_metrics(g.get("scenario")):
                cols.append(f"{lab} ÷ {ref}" + (" (runs)" if lab in ("msgs/s", "RSS/conn") else ""))
        L.append("| " + " | ".join(cols) + " |")
        L.append("|" + "---|" * len(cols))
        for n in names:
            m = g["median"][n]
            rs = [r["servers"].get(n) for r in g["runs"]]
            flag = f" ({m['not_ok']} run(s) not ok)" if m.get("not_ok") else ""
            if idle:
                runs = ", ".join(f"{x['rss_per_conn_kb']:.2f}" if x and "rss_per_conn_kb" in x else "–"
                                 for x in rs)
                v = m.get("rss_per_conn_kb")
                row = [n + flag, f"{v:.2f} ({runs})" if v is not None else "–"]
            else:
                runs = ", ".join(f_rate(x.get("msgs_per_s")) if x else "–" for x in rs)
                row = [n + flag, f"{f_rate(m.get('msgs_per_s'))} ({runs})", f_us(m.get("p50_us")),
                       f_us(m.get("p99_us")),
                       f"{m['cpu_ns_per_msg']:.0f}" if m.get("cpu_ns_per_msg") is not None else "–"]
            row.append(f"{m['peak_rss_kb'] / 1024:.1f} MB" if m.get("peak_rss_kb") else "–")
            row.append(f"{100 * m['lt_cpu']:.0f}%" if m.get("lt_cpu") is not None else "–")
            if has_other:
                row.append(f"{100 * m['other_load']:.0f}%" if m.get("other_load") is not None else "–")
            for ref in active:
                rr = g["ratios_within_run"][ref].get(n, {})
                for k, lab in ratio_metrics(g.get("scenario")):
                    if n == ref:
                        row.append("1")
                        continue
                    x = rr.get(k)
                    if not x:
                        row.append("–")
                    elif lab in ("msgs/s", "RSS/conn"):
                        row.append(f"**{f_x(x['median'])}×** (" + ", ".join(f_x(v) for v in x["runs"]) + ")")
                    else:
                        row.append(f"{f_x(x['median'])}×")
            L.append("| " + " | ".join(row) + " |")
        lags = [(n, x.get("max_send_lag_us")) for r in g["runs"] for n, x in r["servers"].items()
                if x.get("max_send_lag_us") is not None]
        if lags:
            worst = max(lags, key=lambda t: t[1])
            pubs = med([x.get("published_per_s") for r in g["runs"] for x in r["servers"].values()])
            p99s = [(n, x.get("send_lag_p99_us")) for r in g["runs"] for n, x in r["servers"].items()
                     if x.get("send_lag_p99_us") is not None]
            extra = ""
            if p99s:
                w99 = max(p99s, key=lambda t: t[1])
                extra = f"; worst send-lag p99 in the measured window {f_us(w99[1])} ({w99[0]})"
            L += ["", f"Open loop: published/s median {pubs}; largest publisher lag behind schedule "
                  f"{f_us(worst[1])} ({worst[0]}){extra}. Latency is timed from the actual send, so "
                  "a send lag near the p99 means the generator or the machine, not only the server, "
                  "shaped the tail."]
        bad = [(r["run"], n, x.get("failures") or ["not ok"]) for r in g["runs"]
               for n, x in r["servers"].items() if not x.get("ok", True)]
        for run, n, fl in bad:
            L.append(f"- run {run}, {n}: " + "; ".join(fl))
        L.append("")
    return "\n".join(L) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir")
    ap.add_argument("-o", "--out", help="condensed JSON (default: stdout)")
    ap.add_argument("--md", help="markdown with median tables and within-run ratios")
    ap.add_argument("--ref", default="bun,uws", help="reference servers for ratios (comma list)")
    ap.add_argument("--title", help="markdown title (default: the campaign name)")
    ap.add_argument("--name", help="campaign name (default: campaign.json's, else the dir name)")
    a = ap.parse_args()
    meta = load_json(os.path.join(a.dir, "campaign.json")) or {}
    refs = [r for r in a.ref.split(",") if r]
    groups = condense(a.dir, refs, meta)
    if not groups:
        print(f"condense: no compare.sh results under {a.dir}", file=sys.stderr)
        return 1
    name = a.name or meta.get("name") or os.path.basename(os.path.abspath(a.dir))
    doc = {"campaign": name, "meta": meta, "refs": refs, "scenarios": groups}
    text = json.dumps(doc, indent=1, ensure_ascii=False) + "\n"
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    if a.md:
        jn = os.path.basename(a.out) if a.out else "(stdout)"
        with open(a.md, "w") as f:
            f.write(markdown(a.title or name, meta, groups, refs, jn))
    return 0


if __name__ == "__main__":
    sys.exit(main())
