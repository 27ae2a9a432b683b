#!/usr/bin/env python3
"""Condenses scripts/messaging-bench.sh run directories into JSON (every run's key numbers)
and Markdown (medians of the runs, ratios taken within each run, then their median). Several
directories (e.g. parts run at different times) are merged; each one's metadata is listed.

    scripts/messaging_condense.py /tmp/ringhub-messaging/messaging [DIR ...] -o out.json --md out.md
"""
import argparse
import glob
import json
import os
import re
import statistics
import sys

# The number helpers every condenser shares.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from median import f_rate as fmt_rate, f_us, med  # noqa: E402


def fmt_us(v):
    return f_us(v, ms_digits=2)


def load(run_dirs):
    metas, cases = [], {}
    for run_dir in run_dirs:
        meta = json.load(open(os.path.join(run_dir, "meta.json")))
        metas.append(meta)
        cases.update(load_cases(run_dir, meta))
    return metas, cases


def load_cases(run_dir, meta):
    cases = {}
    for c in meta["cases"]:
        runs = {}
        for f in sorted(glob.glob(os.path.join(run_dir, c["id"], "run-*.json"))):
            j = json.load(open(f))
            runs[j.get("run") or int(re.search(r"run-(\d+)", f).group(1))] = j
        cases[c["id"]] = {"case": c, "runs": runs}
    return cases




def key_numbers(j):
    """The numbers kept per run."""
    lat = j.get("latency_us") or {}
    counts = j.get("counts") or {}
    srv = j.get("server") or {}
    wall = j.get("loadtest_wall_s") or 0
    out = {
        "ok": j.get("ok"),
        "failures": j.get("failures"),
        "rate": j.get("published_per_s") if j.get("scenario") == "fanout" else j.get("msgs_per_s"),
        "deliveries_per_s": j.get("msgs_per_s") if j.get("scenario") == "fanout" else None,
        "p50_us": lat.get("p50"),
        "p90_us": lat.get("p90"),
        "p99_us": lat.get("p99"),
        "server_cpu_s": srv.get("cpu_s"),
        "server_hwm_kb": srv.get("hwm_kb"),
        "lt_cpu": (j.get("loadtest_cpu_s", 0) / wall) if wall else None,
    }
    sc = j.get("scenario")
    if sc == "fanout":
        pub = counts.get("published") or 0
        dlv = counts.get("delivered") or 0
        cpu = srv.get("cpu_s") or 0
        out["server_ns_per_publication"] = cpu / pub * 1e9 if pub else None
        out["server_ns_per_delivery"] = cpu / dlv * 1e9 if dlv else None
        out["offset_errors"] = counts.get("offset_errors")
        out["missing"] = counts.get("missing")
    elif sc == "durable":
        ok = counts.get("ok") or 0
        cpu = srv.get("cpu_s") or 0
        out["server_us_per_send"] = cpu / ok * 1e6 if ok else None
        out["received"] = counts.get("received")
        out["acks"] = counts.get("acks")
        out["delivered_at_once"] = counts.get("delivered_at_once")
    elif sc == "recover":
        samples = j.get("recover_us") or []
        out["samples_us"] = samples
        out["reply_bytes"] = j.get("reply_bytes")
        out["publish_1000_p50_us"] = (j.get("publish_us") or {}).get("p50")
    return out






def fmt_ratio(v):
    return "–" if v is None else f"{v:.2f}×"


def fmt_pct(v):
    return "–" if v is None else f"{v * 100:.0f}%"


def ratio_median(cases, a, b, field="rate"):
    """Median over runs of a[run] / b[run] (both must exist in the run)."""
    if a not in cases or b not in cases:
        return None, []
    rs = []
    for run, ja in cases[a]["runs"].items():
        jb = cases[b]["runs"].get(run)
        if not jb:
            continue
        x, y = key_numbers(ja)[field], key_numbers(jb)[field]
        if x and y:
            rs.append(x / y)
    return med(rs), rs


def stat(cases, cid, field):
    if cid not in cases:
        return None, []
    vals = [key_numbers(j)[field] for j in cases[cid]["runs"].values()]
    return med(vals), vals


def runs_str(vals, f=fmt_rate):
    return ", ".join(f(v) for v in vals if v is not None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", nargs="+")
    ap.add_argument("-o", "--json", required=True)
    ap.add_argument("--md", required=True)
    a = ap.parse_args()
    metas, cases = load(a.run_dir)
    meta = metas[0]
    ids = list(cases)

    out = {"meta": metas, "cases": {}}
    for cid, c in cases.items():
        out["cases"][cid] = {
            "args": c["case"]["args"],
            "store": c["case"]["store"],
            "server": c["case"]["server"],
            "runs": {str(r): key_numbers(j) for r, j in sorted(c["runs"].items())},
        }

    md = [f"# Messaging (protocol v2) — `{meta['name']}`", ""]
    for m in metas:
        md.append(
            f"- `{m['command']}`: commit {m['commit']}, engine-v2 reference {m.get('ev2_commit')}, "
            f"`--io {m['io']}`, one shard; {m['runs']} run(s) per case, interleaved; "
            f"{m['env']['pinning']}; started {m['started']}, finished {m.get('finished', '?')}, "
            f"load average at start {m['env']['load average at start']}.")
    md += ["", f"Machine: {meta['env']['cpu']}, {meta['env']['nproc']} CPUs, Linux {meta['env']['kernel']}, "
           f"{meta['env']['rustc']}; redb store on {meta['env']['store filesystem']}. "
           f"Topics: `RINGHUB_TOPICS='{meta['topics']}'`.", "",
           "Cells are medians over the runs (every run in parentheses where useful); ratios are taken "
           "within each run, then the median. Server CPU covers the whole loadtest run (setup, "
           "warm-up, measurement, drain) and the server process's every thread (shard + store), "
           "all pinned to one core.", ""]

    # --- history -------------------------------------------------------------------------
    hist = sorted({(int(m.group(1)), int(m.group(2))) for i in ids
                   if (m := re.match(r"nohist-s(\d+)-w(\d+)$", i))})
    if hist:
        md += ["## Publications/s to a topic with history (fan-out, closed loop)", "",
               "Publications/s published in the measured window (`published_per_s`), W "
               "publications in flight, one publisher, S subscribers of `hist:t0` "
               "(history_size 100) and, for the ratio, of `nohi:t0` (no history, a topic of the same length; "
               "`t0` in runs made before that fix, or with NOHIST_PREFIX=t) on the same build "
               "and memory-store server. `--offsets` checked that every delivery carried the "
               "next offset.", "",
               "| S | W | no history | history, memory | history, redb | memory ÷ none | redb ÷ none | "
               "p50 none / memory / redb | server CPU per publication none / memory / redb | LT CPU none / memory / redb |",
               "|---|---|---|---|---|---|---|---|---|---|"]
        for s, w in hist:
            n, m, r = f"nohist-s{s}-w{w}", f"hist-memory-s{s}-w{w}", f"hist-redb-s{s}-w{w}"
            row = [str(s), str(w)]
            for cid in (n, m, r):
                v, vals = stat(cases, cid, "rate")
                row.append(f"{fmt_rate(v)} ({runs_str(vals)})")
            row.append(fmt_ratio(ratio_median(cases, m, n)[0]))
            row.append(fmt_ratio(ratio_median(cases, r, n)[0]))
            row.append(" / ".join(fmt_us(stat(cases, c, "p50_us")[0]) for c in (n, m, r)))
            row.append(" / ".join(
                (lambda v: "–" if v is None else f"{v / 1000:.2f} µs")(stat(cases, c, "server_ns_per_publication")[0])
                for c in (n, m, r)))
            row.append(" / ".join(fmt_pct(stat(cases, c, "lt_cpu")[0]) for c in (n, m, r)))
            md.append("| " + " | ".join(row) + " |")
        bad = [(cid, r, k["offset_errors"]) for cid in ids if cid.startswith("hist-")
               for r, j in cases[cid]["runs"].items() if (k := key_numbers(j)).get("offset_errors")]
        md += ["", "Offset errors: " + (", ".join(f"{c} run {r}: {e}" for c, r, e in bad) if bad else "none.")]
        md.append("")

    # --- durable -----------------------------------------------------------------------------
    dur = sorted({(m.group(1), int(m.group(2))) for i in ids
                  if (m := re.match(r"(durable-redb|durable-memory|plain-memory)-c(\d+)$", i))},
                 key=lambda t: (t[1], t[0]))
    if dur:
        md += ["## Durable sends/s (`POST /api/v1/send`, `\"durable\": true`)", "",
               "C requests in flight, one TCP connection each (`Connection: close`), to 10,000 "
               "users in turn, 100 of them connected and acknowledging every message. Latency: "
               "TCP connect → whole answer. `plain` = the same send without `durable` "
               "(at-most-once), for the cost of the HTTP path alone.", "",
               "| case | C | sends/s (runs) | p50 | p99 | server CPU per send | LT CPU | ÷ memory (same C, within run) |",
               "|---|---|---|---|---|---|---|---|"]
        for kind, c in dur:
            cid = f"{kind}-c{c}"
            v, vals = stat(cases, cid, "rate")
            rm = ratio_median(cases, cid, f"durable-memory-c{c}")[0] if kind != "durable-memory" else None
            md.append(
                f"| {kind} | {c} | {fmt_rate(v)} ({runs_str(vals)}) | {fmt_us(stat(cases, cid, 'p50_us')[0])} | "
                f"{fmt_us(stat(cases, cid, 'p99_us')[0])} | "
                f"{(lambda x: '–' if x is None else f'{x:.1f} µs')(stat(cases, cid, 'server_us_per_send')[0])} | "
                f"{fmt_pct(stat(cases, cid, 'lt_cpu')[0])} | {fmt_ratio(rm)} |")
        md.append("")

    # --- recover -------------------------------------------------------------------------------
    rec = [i for i in ids if i.startswith("recover-")]
    if rec:
        md += ["## Time to recover 1,000 missed publications", "",
               "Per repetition: publish 1,000 (64 B) with ids and wait for every reply (stored), "
               "reconnect, send `subscribe` with `since`; time from writing the subscribe to "
               "having read the whole reply (`recovered: true`, 1,000 publications, offsets "
               "checked). Median over all repetitions of each run, then the median of the runs.", "",
               "| store | median (runs) | p90 | min / max over all repetitions | reply size | publish 1,000 with replies (p50) |",
               "|---|---|---|---|---|---|"]
        for cid in rec:
            runs = [key_numbers(j) for j in cases[cid]["runs"].values()]
            per_run = [med(k["samples_us"]) for k in runs if k["samples_us"]]
            allv = sorted(x for k in runs for x in k["samples_us"])
            p90 = allv[int(0.9 * (len(allv) - 1))] if allv else None
            md.append(
                f"| {cid.removeprefix('recover-')} | {fmt_us(med(per_run))} ({runs_str(per_run, fmt_us)}) | "
                f"{fmt_us(p90)} | {fmt_us(allv[0] if allv else None)} / {fmt_us(allv[-1] if allv else None)} | "
                f"{fmt_rate(med([k['reply_bytes'] for k in runs]))}B | "
                f"{fmt_us(med([k['publish_1000_p50_us'] for k in runs]))} |")
        r = ratio_median(cases, "recover-redb", "recover-memory", "p50_us")[0]
        md += ["", f"redb ÷ memory (median of per-run medians' ratios): {fmt_ratio(r)}", ""]

    # --- fanout vs engine v2 -------------------------------------------------------------------
    fo = sorted({int(m.group(1)) for i in ids if (m := re.match(r"fanout-s1000-w(\d+)-cur$", i))})
    if fo:
        md += ["## Fan-out without history: this build vs engine v2 (same run)", "",
               "1,000 subscribers of `t0`, one publisher, W publications in flight; deliveries/s.", "",
               "| W | this build (runs) | engine v2 (runs) | this ÷ engine v2 (per run) | server CPU per delivery this / v2 | p50 this / v2 | LT CPU this / v2 |",
               "|---|---|---|---|---|---|---|"]
        for w in fo:
            c, e = f"fanout-s1000-w{w}-cur", f"fanout-s1000-w{w}-ev2"
            vc, lc = stat(cases, c, "deliveries_per_s")
            ve, le = stat(cases, e, "deliveries_per_s")
            r, rs = ratio_median(cases, c, e, "deliveries_per_s")
            ns = " / ".join((lambda v: "–" if v is None else f"{v:.0f} ns")(stat(cases, x, "server_ns_per_delivery")[0]) for x in (c, e))
            md.append(
                f"| {w} | {fmt_rate(vc)} ({runs_str(lc)}) | {fmt_rate(ve)} ({runs_str(le)}) | "
                f"{fmt_ratio(r)} ({', '.join(f'{x:.2f}' for x in rs)}) | {ns} | "
                f"{' / '.join(fmt_us(stat(cases, x, 'p50_us')[0]) for x in (c, e))} | "
                f"{' / '.join(fmt_pct(stat(cases, x, 'lt_cpu')[0]) for x in (c, e))} |")
        md.append("")

    failed = [(cid, r, j.get("failures")) for cid in ids for r, j in cases[cid]["runs"].items() if not j.get("ok")]
    want = {c["id"]: m["runs"] for m in metas for c in m["cases"]}
    missing = [(cid, len(cases[cid]["runs"]), want[cid]) for cid in ids if len(cases[cid]["runs"]) < want[cid]]
    md += ["## Failed or missing runs", ""]
    md += [f"- {c} run {r}: {f}" for c, r, f in failed] or ["- none failed"]
    md += [f"- {c}: only {n} of {w} runs produced a result" for c, n, w in missing]
    md.append("")

    json.dump(out, open(a.json, "w"), indent=1)
    open(a.md, "w").write("\n".join(md))


if __name__ == "__main__":
    main()
