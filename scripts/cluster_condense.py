#!/usr/bin/env python3
"""Condenses scripts/cluster-bench.sh run directories into JSON (every run's key numbers) and
Markdown (medians of the runs; ratios and differences taken within each run, then the median).

    scripts/cluster_condense.py /tmp/ringhub-cluster/cluster [DIR ...] -o out.json --md out.md

With --annotate, instead adds to one loadtest result (printed to stdout) what cluster-bench.sh
measured around it: Redis `INFO commandstats` deltas and every server process's CPU time (per
thread name for ringhub), from the RUN.cmd0/cmd1 and RUN.cpu0/cpu1 snapshots.
"""
import argparse
import glob
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from median import f_rate, f_us, med  # noqa: E402

# Commands the benchmark itself sends (the snapshots), not the servers.
OWN_COMMANDS = {"info"}


def read_pairs(path):
    out = {}
    try:
        for line in open(path):
            parts = line.split()
            if len(parts) >= 2:
                out[tuple(parts[:-1])] = int(parts[-1])
    except OSError:
        pass
    return out


def read_cmds(path):
    out = {}
    try:
        for line in open(path):
            name, calls, usec = line.split()
            out[name] = (int(calls), int(usec))
    except (OSError, ValueError):
        pass
    return out


def annotate(a):
    j = json.load(open(a.annotate))
    published = (j.get("counts") or {}).get("published") or 0
    delivered = (j.get("counts") or {}).get("delivered") or 0
    c0, c1 = read_cmds(a.snapshots + ".cmd0"), read_cmds(a.snapshots + ".cmd1")
    cmds = {}
    for name, (calls, usec) in c1.items():
        b_calls, b_usec = c0.get(name, (0, 0))
        if calls - b_calls > 0 and name not in OWN_COMMANDS:
            cmds[name] = {"calls": calls - b_calls, "usec": usec - b_usec}
    total = sum(c["calls"] for c in cmds.values())
    pub = cmds.get("publish", {}).get("calls", 0) + cmds.get("spublish", {}).get("calls", 0)
    t0, t1 = read_pairs(a.snapshots + ".cpu0"), read_pairs(a.snapshots + ".cpu1")
    secs = {k: (v - t0.get(k, 0)) / a.clk_tck for k, v in t1.items()}
    procs = {k[0]: v for k, v in secs.items() if k[1] == "total"}
    threads = {}
    for (proc, name), v in secs.items():
        if name != "total":
            # Thread names: shard threads are numbered, the rest summed by name.
            base = re.sub(r"[-_]?\d+$", "", name)
            threads[base] = threads.get(base, 0) + v
    server_cpu = sum(v for p, v in procs.items() if not p.startswith("redis"))
    redis_cpu = sum(v for p, v in procs.items() if p.startswith("redis"))
    j["run"] = a.run
    j["loadtest_exit"] = a.rc
    j["topology"] = a.topology
    j["store"] = a.store
    j["alive_after"] = a.alive
    j["servers"] = {
        "cpu_s": round(server_cpu, 2),
        "redis_cpu_s": round(redis_cpu, 2),
        "per_process_cpu_s": {p: round(v, 2) for p, v in sorted(procs.items())},
        "threads_cpu_s": {t: round(v, 2) for t, v in sorted(threads.items())},
        "ns_per_delivery": server_cpu / delivered * 1e9 if delivered else None,
        "ns_per_publication": server_cpu / published * 1e9 if published else None,
    }
    if c1:
        j["redis"] = {
            "commands": cmds,
            "total_calls": total,
            "publish_calls": pub,
            "commands_per_publication": total / published if published else None,
            "publish_per_publication": pub / published if published else None,
            "redis_cpu_us_per_publication": redis_cpu / published * 1e6 if published else None,
        }
    json.dump(j, sys.stdout, indent=2)
    print()


def key(j):
    def hist(name):
        h = j.get(name) or {}
        return h if h.get("count") else {}  # an empty histogram (no such subscriber) is no data

    lat, same, cross = hist("latency_us"), hist("latency_same_us"), hist("latency_cross_us")
    srv, red = j.get("servers") or {}, j.get("redis") or {}
    wall = j.get("loadtest_wall_s") or 0
    return {
        "ok": j.get("ok"), "failures": j.get("failures"),
        "published_per_s": j.get("published_per_s"), "deliveries_per_s": j.get("msgs_per_s"),
        "p50_us": lat.get("p50"), "p99_us": lat.get("p99"),
        "same_p50_us": same.get("p50"), "same_p99_us": same.get("p99"),
        "cross_p50_us": cross.get("p50"), "cross_p99_us": cross.get("p99"),
        "send_lag_p99_us": (j.get("send_lag_us") or {}).get("p99"),
        "servers_cpu_s": srv.get("cpu_s"), "redis_cpu_s": srv.get("redis_cpu_s"),
        "threads_cpu_s": srv.get("threads_cpu_s"),
        "ns_per_delivery": srv.get("ns_per_delivery"), "ns_per_publication": srv.get("ns_per_publication"),
        "redis_commands_per_publication": red.get("commands_per_publication"),
        "redis_publish_per_publication": red.get("publish_per_publication"),
        "redis_commands": {k: v["calls"] for k, v in (red.get("commands") or {}).items()},
        "redis_cpu_us_per_publication": red.get("redis_cpu_us_per_publication"),
        "published": (j.get("counts") or {}).get("published"),
        "missing": (j.get("counts") or {}).get("missing"),
        "offset_errors": (j.get("counts") or {}).get("offset_errors"),
        "lt_cpu": (j.get("loadtest_cpu_s", 0) / wall) if wall else None,
    }


def load(run_dirs):
    metas, cases = [], {}
    for d in run_dirs:
        meta = json.load(open(os.path.join(d, "meta.json")))
        meta["redis_publish"] = [json.load(open(f)) for f in
                                 sorted(glob.glob(os.path.join(d, "redis-publish", "run-*.json")))]
        metas.append(meta)
        for c in meta["cases"]:
            runs = {}
            for f in sorted(glob.glob(os.path.join(d, c["id"], "run-*.json"))):
                j = json.load(open(f))
                runs[j.get("run") or int(re.search(r"run-(\d+)", f).group(1))] = key(j)
            cases[c["id"]] = {"case": c, "runs": runs}
    return metas, cases


def stat(cases, cid, field):
    if cid not in cases:
        return None, []
    vals = [k[field] for _, k in sorted(cases[cid]["runs"].items())]
    return med(vals), vals


def within(cases, a, b, fn):
    """Median over runs of fn(a[run], b[run])."""
    if a not in cases or (b is not None and b not in cases):
        return None, []
    xs = []
    for run, ka in sorted(cases[a]["runs"].items()):
        kb = cases[b]["runs"].get(run) if b else ka
        if kb is None:
            continue
        try:
            v = fn(ka, kb)
        except (TypeError, ZeroDivisionError):
            v = None
        if v is not None:
            xs.append(v)
    return med(xs), xs


def ratio(field):
    return lambda x, y: x[field] / y[field]


def cell(cases, cid, field, f=f_rate):
    v, vals = stat(cases, cid, field)
    if v is None:
        return "–"
    return f"{f(v)} ({', '.join(f(x) for x in vals if x is not None)})"


def fx(v):
    return "–" if v is None else f"{v:.2f}×"


def f2(v):
    return "–" if v is None else f"{v:.2f}"


def fus(v):
    return f_us(v, ms_digits=2)


def fus1(v):
    return "–" if v is None else (f"{v:.1f} µs" if v < 1000 else f_us(v, ms_digits=2))


def fns(v):
    return "–" if v is None else f"{v:.0f} ns"


def fpct(v):
    return "–" if v is None else f"{v * 100:.0f}%"


def condense(a):
    metas, cases = load(a.run_dir)
    meta = metas[0]
    ids = list(cases)
    out = {"meta": metas, "cases": {cid: {"case": c["case"], "runs": {str(r): k for r, k in sorted(c["runs"].items())}}
                                    for cid, c in cases.items()}}
    if not meta["cases"] and len(metas) > 1:
        meta = metas[1]
    n = meta["nodes"]
    md = [f"# Cluster (Redis) — `{meta['name']}`", ""]
    for m in metas:
        md.append(f"- `{m['command']}`: commit {m['commit']}, `--io {m['io']}`, one shard per node; "
                  f"{m['runs']} run(s) per case, interleaved; {m['env']['pinning']}; started {m['started']}, "
                  f"finished {m.get('finished', '?')}, load average at start {m['env']['load average at start']}.")
    env = meta["env"]
    md += ["", f"Machine: {env['cpu']}, {env['nproc']} CPUs, Linux {env['kernel']}, {env['rustc']}; "
           f"{env['redis']} (`--save \"\" --appendonly no`), Node {env['node']}, {env['socketio']}", "",
           f"**All {n} nodes and Redis share one core** (the load generator has the other): the cluster "
           "rows measure what the cluster machinery costs, not scale-out. Cells are medians over the runs "
           "(every run in parentheses); ratios and latency differences are taken within each run, then "
           "the median. Server CPU covers the whole load-generator run (setup, warm-up, measurement, "
           "drain), all nodes, without Redis; Redis commands are `INFO commandstats` deltas over the same "
           "span (the benchmark's own `INFO` excluded), divided by every publication made.", ""]

    scen = []
    for cid in ids:
        m = re.match(r"fanout-(w\d+|r\d+)-(ringhub|sio)-(\d+)$", cid)
        if m and m.group(1) not in scen:
            scen.append(m.group(1))
    if scen:
        md += ["## Fan-out: 1,000 subscribers on one topic, publisher on node 1", "",
               "`wN`: closed loop, N publications in flight; `rN`: open loop, N publications/s. "
               f"Subscribers round-robin over the {n} nodes (⅓ on the publisher's node).", "",
               f"| case | ringhub 1 node deliveries/s | ringhub {n} nodes deliveries/s | {n} ÷ 1 | "
               f"socket.io 1 node | socket.io {n} nodes | ringhub ÷ socket.io ({n} nodes) | "
               f"publications/s ringhub {n} / socket.io {n} |",
               "|---|---|---|---|---|---|---|---|"]
        for s in scen:
            r1, rn, s1, sn = (f"fanout-{s}-ringhub-1", f"fanout-{s}-ringhub-{n}", f"fanout-{s}-sio-1", f"fanout-{s}-sio-{n}")
            md.append(f"| {s} | {cell(cases, r1, 'deliveries_per_s')} | {cell(cases, rn, 'deliveries_per_s')} | "
                      f"{fx(within(cases, rn, r1, ratio('deliveries_per_s'))[0])} | "
                      f"{cell(cases, s1, 'deliveries_per_s')} | {cell(cases, sn, 'deliveries_per_s')} | "
                      f"{fx(within(cases, rn, sn, ratio('deliveries_per_s'))[0])} | "
                      f"{f_rate(stat(cases, rn, 'published_per_s')[0])} / {f_rate(stat(cases, sn, 'published_per_s')[0])} |")
        md += ["", "Per publication and per delivery (medians): Redis commands per publication "
               "(all commands / PUBLISH only), Redis CPU per publication, servers' CPU per delivery, "
               "load generator CPU share.", "",
               "| case | Redis cmds/pub ringhub (PUBLISH) | socket.io (PUBLISH) | Redis CPU/pub ringhub / socket.io | "
               f"server CPU/delivery ringhub 1 / {n} | socket.io 1 / {n} | p50 ringhub 1 / {n} / socket.io {n} | LT CPU ringhub {n} / socket.io {n} |",
               "|---|---|---|---|---|---|---|---|"]
        for s in scen:
            r1, rn, s1, sn = (f"fanout-{s}-ringhub-1", f"fanout-{s}-ringhub-{n}", f"fanout-{s}-sio-1", f"fanout-{s}-sio-{n}")
            md.append(
                f"| {s} | {f2(stat(cases, rn, 'redis_commands_per_publication')[0])} "
                f"({f2(stat(cases, rn, 'redis_publish_per_publication')[0])}) | "
                f"{f2(stat(cases, sn, 'redis_commands_per_publication')[0])} "
                f"({f2(stat(cases, sn, 'redis_publish_per_publication')[0])}) | "
                f"{fus1(stat(cases, rn, 'redis_cpu_us_per_publication')[0])} / {fus1(stat(cases, sn, 'redis_cpu_us_per_publication')[0])} | "
                f"{fns(stat(cases, r1, 'ns_per_delivery')[0])} / {fns(stat(cases, rn, 'ns_per_delivery')[0])} | "
                f"{fns(stat(cases, s1, 'ns_per_delivery')[0])} / {fns(stat(cases, sn, 'ns_per_delivery')[0])} | "
                f"{fus(stat(cases, r1, 'p50_us')[0])} / {fus(stat(cases, rn, 'p50_us')[0])} / {fus(stat(cases, sn, 'p50_us')[0])} | "
                f"{fpct(stat(cases, rn, 'lt_cpu')[0])} / {fpct(stat(cases, sn, 'lt_cpu')[0])} |")
        md.append("")

    lat = [cid for cid in ids if cid.startswith("latency-")]
    if lat:
        md += ["## Added latency of a cross-node delivery (open loop)", "",
               "Publish → receive, every delivery in the measured window; subscribers on the "
               "publisher's node (same) and on the others (cross) in the same run. Added = cross − same "
               "within a run, then the median over runs.", "",
               "| case | pub/s | same p50 | same p99 | cross p50 | cross p99 | added p50 | added p99 | "
               "send lag p99 | Redis cmds/pub | server CPU/delivery |",
               "|---|---|---|---|---|---|---|---|---|---|---|"]
        for cid in lat:
            add50 = within(cases, cid, None, lambda x, _: x["cross_p50_us"] - x["same_p50_us"])[0]
            add99 = within(cases, cid, None, lambda x, _: x["cross_p99_us"] - x["same_p99_us"])[0]
            md.append(
                f"| {cid.removeprefix('latency-')} | {f_rate(stat(cases, cid, 'published_per_s')[0])} | "
                f"{cell(cases, cid, 'same_p50_us', fus)} | {cell(cases, cid, 'same_p99_us', fus)} | "
                f"{cell(cases, cid, 'cross_p50_us', fus)} | {cell(cases, cid, 'cross_p99_us', fus)} | "
                f"{fus(add50)} | {fus(add99)} | {fus(stat(cases, cid, 'send_lag_p99_us')[0])} | "
                f"{f2(stat(cases, cid, 'redis_commands_per_publication')[0])} | {fns(stat(cases, cid, 'ns_per_delivery')[0])} |")
        md.append("")

    hist = sorted({int(m.group(1)) for cid in ids if (m := re.match(r"hist-s\d+-w(\d+)-", cid))})
    if hist:
        store = meta.get("history_store")
        md += [f"## A topic with history in cluster mode (store: {store})", "",
               "Publications/s to `hist:t0` (history_size 100) vs `t0` without history, same nodes; "
               "`--offsets` checks that every subscriber on every node saw consecutive offsets.", "",
               "| W | no history pub/s | history pub/s | history ÷ none | Redis cmds/pub none / history | "
               "Redis CPU/pub none / history | offset errors / missing |",
               "|---|---|---|---|---|---|---|"]
        for w in hist:
            h = next(c for c in ids if re.match(rf"hist-s\d+-w{w}-", c))
            nh = "no" + h
            errs = sum((k.get("offset_errors") or 0) for k in cases[h]["runs"].values())
            miss = sum((k.get("missing") or 0) for k in cases[h]["runs"].values())
            md.append(f"| {w} | {cell(cases, nh, 'published_per_s')} | {cell(cases, h, 'published_per_s')} | "
                      f"{fx(within(cases, h, nh, ratio('published_per_s'))[0])} | "
                      f"{f2(stat(cases, nh, 'redis_commands_per_publication')[0])} / {f2(stat(cases, h, 'redis_commands_per_publication')[0])} | "
                      f"{fus1(stat(cases, nh, 'redis_cpu_us_per_publication')[0])} / {fus1(stat(cases, h, 'redis_cpu_us_per_publication')[0])} | "
                      f"{errs} / {miss} |")
        md.append("")

    rp = [r for m in metas for r in m["redis_publish"]]
    if rp:
        r0 = rp[0]
        md += ["## PUBLISH/s one Redis sustains here (`redis-benchmark`)", "",
               f"`redis-benchmark -c {r0['connections']} -P {r0['pipeline']} PUBLISH rh:t:t0 <{r0['payload_bytes']} bytes>` "
               f"with {r0['subscribers']} `redis-cli SUBSCRIBE` clients (the nodes' stand-ins); Redis alone on "
               "its core, the benchmark client and the subscribers on the other.", "",
               f"- PUBLISH/s: **{f_rate(med([r['publish_per_s'] for r in rp]))}** "
               f"({', '.join(f_rate(r['publish_per_s']) for r in rp)}); Redis at "
               f"{', '.join(fpct(r['redis_cpu_share']) for r in rp)} of its core; subscribers still "
               f"connected at the end: {', '.join(str(r['subscribers_after']) for r in rp)}.", ""]

    md += ["## Where the time goes (CPU seconds over the whole run, medians)", "",
           "| case | servers | Redis | per thread (summed over nodes) | Redis commands (calls, run 1) |",
           "|---|---|---|---|---|"]
    for cid in ids:
        runs = cases[cid]["runs"]
        if not runs:
            continue
        names = sorted({t for k in runs.values() for t in (k["threads_cpu_s"] or {})})
        th = ", ".join(f"{t} {med([(k['threads_cpu_s'] or {}).get(t) for k in runs.values()]):.2f}" for t in names)
        first = runs[min(runs)]
        cmds = ", ".join(f"{c} {v}" for c, v in sorted(first["redis_commands"].items(), key=lambda x: -x[1]))
        md.append(f"| {cid} | {f2(stat(cases, cid, 'servers_cpu_s')[0])} | {f2(stat(cases, cid, 'redis_cpu_s')[0])} | "
                  f"{th or '–'} | {cmds or '–'} |")
    md.append("")

    failed = [(cid, r, k["failures"]) for cid in ids for r, k in cases[cid]["runs"].items() if not k["ok"]]
    want = {c["id"]: m["runs"] for m in metas for c in m["cases"]}
    missing = [(cid, len(cases[cid]["runs"]), want[cid]) for cid in ids if len(cases[cid]["runs"]) < want[cid]]
    md += ["## Failed or missing runs", ""]
    md += [f"- {c} run {r}: {f}" for c, r, f in failed] or ["- none failed"]
    md += [f"- {c}: only {k} of {w} runs produced a result" for c, k, w in missing]
    md.append("")
    json.dump(out, open(a.json, "w"), indent=1)
    open(a.md, "w").write("\n".join(md))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", nargs="*")
    ap.add_argument("-o", "--json")
    ap.add_argument("--md")
    ap.add_argument("--annotate", help="a loadtest JSON result to annotate (printed to stdout)")
    ap.add_argument("--snapshots", help="RUN path prefix of the .cmd0/.cmd1/.cpu0/.cpu1 files")
    ap.add_argument("--run", type=int)
    ap.add_argument("--rc", type=int)
    ap.add_argument("--topology")
    ap.add_argument("--store")
    ap.add_argument("--alive")
    ap.add_argument("--clk-tck", type=float, default=100.0)
    a = ap.parse_args()
    if a.annotate:
        annotate(a)
    elif a.run_dir and a.json and a.md:
        condense(a)
    else:
        ap.error("give RUN_DIR... -o JSON --md MD, or --annotate FILE --snapshots PREFIX")


if __name__ == "__main__":
    main()
