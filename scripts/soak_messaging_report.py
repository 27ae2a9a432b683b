#!/usr/bin/env python3
"""Verdict, JSON summary, Markdown and SVG of a messaging soak (scripts/soak-messaging.sh).
Python 3 stdlib only.

    soak_messaging_report.py PREFIX --variant NAME --command "..." [--panics N] [--out-dir DIR]

Reads PREFIX.csv and PREFIX-raw.json (scripts/soak_messaging.py) and writes
DIR/soak-messaging-NAME.{json,md,svg}. Exit 0 when the verdict is pass, 1 otherwise.

Criteria (per server process):
  RSS flat      median RSS of the last minute of the load is at most RSS_SLACK_MB (16) MiB above
                the median of its first minute (the first minute starts after the warm-up).
  descriptors   the last sample, after every client left and the settle time, is at most the
                baseline (the first sample, before any client connected).
  no loss       every durable send answered 200 was received and acked by the end; no message
                came again after its ack was answered (single node; in a cluster the protocol
                allows it while Redis is away, so it is reported, not failed); every history
                publication answered 200 reached the subscribers, every subscriber saw its
                offsets once, in order, without a gap, and caught up to the top at the end.
"""
import argparse, csv, json, math, statistics
from html import escape

from soak_plot import nice_max  # same folder: the axis rounding of the other soak's curves

RSS_SLACK_MB = 16


def svg(rows, raw, nodes, title):
    W, L, R, T, PH, GAP = 900, 80, 130, 46, 130, 34
    panels = [("rss_kb", "RSS (MiB)", 1 / 1024), ("fds", "open descriptors", 1), ("conns", "connections", 1),
              ("probe_ms", "store probe (ms)", 1)]
    H = T + len(panels) * (PH + GAP) + 20
    t = [float(r["t"]) for r in rows]
    tmax = nice_max(max(t))
    pw = W - L - R
    x = lambda v: L + pw * v / tmax
    colors = ["#1f77b4", "#d62728", "#2ca02c"]
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="15">{escape(title)}</text>']
    for i, (key, label, scale) in enumerate(panels):
        top = T + i * (PH + GAP)
        series = {n: [max(0.0, float(r[f"{n}_{key}"])) * scale for r in rows] for n in nodes}
        vmax = nice_max(max(max(s) for s in series.values()) * 1.1 or 1)
        y = lambda v, top=top, vmax=vmax: top + PH - PH * min(v, vmax) / vmax
        x0, x1 = x(raw["t_load_start"]), x(raw["t_load_end"])
        o.append(f'<rect x="{x0:.1f}" y="{top}" width="{x1 - x0:.1f}" height="{PH}" fill="#f3f3f3"/>')
        for s in raw["storms"]:
            o.append(f'<rect x="{x(s["start"]):.1f}" y="{top}" width="{max(1, x(s["end"]) - x(s["start"])):.1f}" '
                     f'height="{PH}" fill="#ffe3bf"/>')
        for rr in raw["redis_restarts"]:
            o.append(f'<rect x="{x(rr["killed"]):.1f}" y="{top}" width="{max(1, x(rr["started"]) - x(rr["killed"])):.1f}" '
                     f'height="{PH}" fill="#f6b0b0"/>')
        step = nice_max(vmax / 4)
        for k in range(int(vmax / step) + 1):
            v = k * step
            o.append(f'<line x1="{L}" x2="{L + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e4e4e4"/>')
            o.append(f'<text x="{L - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
        ts = nice_max(tmax / 10)
        for k in range(int(tmax / ts) + 1):
            o.append(f'<text x="{x(k * ts):.1f}" y="{top + PH + 14}" text-anchor="middle">{k * ts:g}</text>')
        o.append(f'<rect x="{L}" y="{top}" width="{pw}" height="{PH}" fill="none" stroke="#444"/>')
        o.append(f'<text transform="translate({L - 50},{top + PH / 2}) rotate(-90)" text-anchor="middle">{label}</text>')
        for j, (n, ys) in enumerate(series.items()):
            pts = " ".join(f"{x(tv):.1f},{y(v):.1f}" for tv, v in zip(t, ys))
            o.append(f'<polyline points="{pts}" fill="none" stroke="{colors[j]}" stroke-width="1.5"/>')
            if i == 0:
                ly = top + 16 + 18 * j
                o.append(f'<line x1="{L + pw + 10}" x2="{L + pw + 30}" y1="{ly}" y2="{ly}" stroke="{colors[j]}" stroke-width="2"/>')
                o.append(f'<text x="{L + pw + 36}" y="{ly + 4}">{escape(nodes[n])}</text>')
    ly = T + 16 + 18 * len(nodes) + 10
    for fill, what in (("#f3f3f3", "load"), ("#ffe3bf", "reconnect storm"), ("#f6b0b0", "Redis down")):
        o.append(f'<rect x="{L + pw + 10}" y="{ly - 8}" width="20" height="12" fill="{fill}"/>')
        o.append(f'<text x="{L + pw + 36}" y="{ly + 2}">{what}</text>')
        ly += 18
    o.append(f'<text x="{L + pw / 2}" y="{H - 6}" text-anchor="middle">seconds since the workload started</text>')
    o.append("</svg>")
    return "\n".join(o) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("prefix")
    p.add_argument("--variant", required=True)
    p.add_argument("--command", default="")
    p.add_argument("--labels", default="", help="comma-separated names of the server processes")
    p.add_argument("--panics", type=int, default=0)
    p.add_argument("--out-dir", default="docs/benchmarks")
    a = p.parse_args()
    rows = list(csv.DictReader(open(a.prefix + ".csv")))
    raw = json.load(open(a.prefix + "-raw.json"))
    cluster = bool(raw["redis_restarts"]) or "cluster" in a.variant
    nodes = sorted({k.split("_")[0] for k in rows[0] if k.startswith("n") and k.endswith("_rss_kb")})
    labels = a.labels.split(",") if a.labels else nodes
    names = dict(zip(nodes, labels))
    fails, servers = [], {}
    ls, le = raw["t_load_start"], raw["t_load_end"]
    for n in nodes:
        rss = lambda lo, hi: [int(r[f"{n}_rss_kb"]) / 1024 for r in rows if lo <= float(r["t"]) < hi]
        first, last = rss(ls, ls + 60), rss(le - 60, le)
        load = [(float(r["t"]), int(r[f"{n}_rss_kb"]) / 1024) for r in rows if ls <= float(r["t"]) < le]
        mt = statistics.fmean(t for t, _ in load)
        mv = statistics.fmean(v for _, v in load)
        den = sum((t - mt) ** 2 for t, _ in load) or 1
        slope = sum((t - mt) * (v - mv) for t, v in load) / den * 600
        fds = [int(r[f"{n}_fds"]) for r in rows]
        probes = [float(r[f"{n}_probe_ms"]) for r in rows if r["phase"] in ("warmup", "load")]
        bad_probes = sum(1 for r in rows if r[f"{n}_probe_status"] not in ("200", "0"))
        errors = "|".join(e for e in rows[-1][f"{n}_errors"].split("|") if e and not e.endswith("=0"))
        s = {"name": names[n], "rss_baseline_mb": round(int(rows[0][f"{n}_rss_kb"]) / 1024, 1),
             "rss_first_minute_median_mb": round(statistics.median(first), 1),
             "rss_last_minute_median_mb": round(statistics.median(last), 1),
             "rss_peak_mb": round(max(int(r[f"{n}_rss_kb"]) for r in rows) / 1024, 1),
             "rss_final_mb": round(int(rows[-1][f"{n}_rss_kb"]) / 1024, 1),
             "rss_slope_mb_per_10min": round(slope, 1),
             "fds_baseline": fds[0], "fds_peak": max(fds), "fds_final": fds[-1],
             "connections_peak": max(int(r[f"{n}_conns"]) for r in rows),
             "frames_out": int(rows[-1][f"{n}_frames_out"]),
             "probe_ms_median": round(statistics.median(probes), 1) if probes else None,
             "probe_ms_max": max(probes) if probes else None, "probe_not_200": bad_probes,
             "errors_by_code": errors, "alive_throughout": all(int(r[f"{n}_rss_kb"]) > 0 for r in rows)}
        servers[n] = s
        if s["rss_last_minute_median_mb"] > s["rss_first_minute_median_mb"] + RSS_SLACK_MB:
            fails.append(f"{names[n]}: RSS grew: last-minute median {s['rss_last_minute_median_mb']} MiB vs "
                         f"first-minute {s['rss_first_minute_median_mb']} MiB (allowed +{RSS_SLACK_MB})")
        if fds[-1] > fds[0]:
            fails.append(f"{names[n]}: {fds[-1]} descriptors at the end, baseline {fds[0]}")
        if not s["alive_throughout"]:
            fails.append(f"{names[n]}: the process died")
    d, c = raw["durable"], raw["counters"]
    lost = sum(len(v) for v in d["lost"].values())
    dup_after_ack = c.get("dup_after_ack", 0)
    if lost:
        fails.append(f"{lost} durable messages answered 200 were never received: {json.dumps(d['lost'])[:400]}")
    if d["unacked_at_end"]:
        fails.append(f"inboxes not empty after the final drain: {json.dumps(d['unacked_at_end'])[:400]}")
    if dup_after_ack and not cluster:
        fails.append(f"{dup_after_ack} durable messages came again after their ack was answered")
    if len(d["epochs"]) > 1:
        fails.append(f"the inbox epoch changed: {d['epochs']}")
    for k in ("history_gaps", "history_dup_or_reorder"):
        if c.get(k):
            fails.append(f"{k}: {c[k]}")
    for t, s in raw["topics"].items():
        if s["answered_not_seen"]:
            fails.append(f"{t}: publications answered 200 never seen by a subscriber: {s['answered_not_seen'][:10]}")
    for h in raw["history_final"]:
        if h["last"] is None or h["last"] < h["top_answered"]:
            fails.append(f"history subscriber {h['sub']} ended at {h['last']}, top answered {h['top_answered']}")
    if len(raw["history_final"]) == 0:
        fails.append("no history subscriber finished")
    if a.panics:
        fails.append(f"{a.panics} panic line(s) in the server logs")
    stale = {k: v for k, v in raw["presence_after"].items() if v != 0}
    if stale and not cluster:
        fails.append(f"presence not empty after every client left: {stale}")
    verdict = "pass" if not fails else "fail"
    summary = {"variant": a.variant, "verdict": verdict, "failures": fails, "command": a.command,
               "criteria": {"rss": f"last-minute median <= first-minute median (after the warm-up) + {RSS_SLACK_MB} MiB",
                            "fds": "final sample <= baseline (first sample)",
                            "durable": "every message answered 200 received, every inbox empty (all acked) after the final drain; none again after its ack reply"
                                       + (" (cluster: reported only)" if cluster else ""),
                            "history": "no gap, duplicate or reorder; every answered offset seen; final catch-up to the top"},
               "duration_s": round(le - ls + (ls - raw["t_warmup_start"]), 1),
               "load_window_s": [round(ls, 1), round(le, 1)], "servers": servers,
               "durable": {"answered": d["answered"], "received": d["received"], "acked_replied": d["acked"], "lost": lost,
                           "unacked_at_end": d["unacked_at_end"], "send_to_first_receipt_s": d["first_receipt_s"],
                           "redelivered_before_ack": c.get("redelivered_unacked", 0), "again_after_ack": dup_after_ack,
                           "received_not_answered": d["received_not_answered"], "epochs": d["epochs"],
                           "lost_detail": d["lost"], "again_after_ack_detail": d["dup_after_ack"]},
               "history": {t: s for t, s in raw["topics"].items()},
               "history_final": raw["history_final"], "presence_after": raw["presence_after"],
               "storms": raw["storms"], "redis_restarts": raw["redis_restarts"], "counters": c}
    base = f"{a.out_dir}/soak-messaging-{a.variant}"
    json.dump(summary, open(base + ".json", "w"), indent=1)
    title = f"ringhub messaging soak, {a.variant}: {summary['duration_s']:.0f} s — {verdict}"
    open(base + ".svg", "w").write(svg(rows, raw, names, title))
    md = [f"# Messaging soak: {a.variant}", "", f"Verdict: **{verdict}**" + ("" if not fails else " — " + "; ".join(fails)),
          "", f"Command: `{a.command}`", "", f"![curves](soak-messaging-{a.variant}.svg)", "",
          "| server | RSS baseline / first-min median / last-min median / peak / final (MiB) | slope (MiB/10 min) | fds baseline / peak / final | conns peak | store probe median / max (ms), not 200 |",
          "|---|---|---:|---|---:|---|"]
    for s in servers.values():
        md.append(f"| {s['name']} | {s['rss_baseline_mb']} / {s['rss_first_minute_median_mb']} / {s['rss_last_minute_median_mb']} / "
                  f"{s['rss_peak_mb']} / {s['rss_final_mb']} | {s['rss_slope_mb_per_10min']} | {s['fds_baseline']} / {s['fds_peak']} / "
                  f"{s['fds_final']} | {s['connections_peak']} | {s['probe_ms_median']} / {s['probe_ms_max']}, {s['probe_not_200']} |")
    sd = summary["durable"]
    md += ["", f"Durable: {sd['answered']} sends answered 200, {sd['received']} received (ack replies seen for {sd['acked_replied']}; "
           f"the server's inboxes empty at the end: {not sd['unacked_at_end']}), **{sd['lost']} lost**, "
           f"{sd['redelivered_before_ack']} written again before an ack (allowed: at-least-once), "
           f"{sd['again_after_ack']} again after the ack was answered, {sd['received_not_answered']} received but not answered 200, "
           f"inbox epochs {sd['epochs']}. Send request to first receipt (users are away up to 4 s between sessions): "
           f"p50 {sd['send_to_first_receipt_s']['p50']} s, p99 {sd['send_to_first_receipt_s']['p99']} s, "
           f"max {sd['send_to_first_receipt_s']['max']} s, {sd['send_to_first_receipt_s']['over_15s']} over 15 s.",
           f"History: {c.get('publish_ok', 0)} publishes answered 200 on {len(raw['topics'])} topics, "
           f"{c.get('history_recoveries', 0)} `since` recoveries, {c.get('history_unrecoverable', 0)} `recovered: false`, "
           f"{c.get('history_gaps', 0)} gaps, {c.get('history_dup_or_reorder', 0)} duplicates/reorders, "
           f"{c.get('history_pages', 0)} pages, closes: " + ", ".join(f"{k[15:]} x{v}" for k, v in c.items() if k.startswith("history_closed_")) + ".",
           f"Presence: {c.get('presence_cycles', 0)} join/leave cycles, watchers saw {c.get('presence_join_events', 0)} joins / "
           f"{c.get('presence_leave_events', 0)} leaves; presence after the end: {raw['presence_after']}.",
           f"Storms: {len(raw['storms'])} (8 threads x 10 s connect+abort as `victim`/`u0`), "
           f"{sum(s['connections'] for s in raw['storms'])} upgrades. Redis restarts (SIGKILL): {len(raw['redis_restarts'])}.",
           f"Durable connections {c.get('durable_connects', 0)}; server errors by code at the end: "
           + "; ".join(f"{s['name']}: {s['errors_by_code'] or 'none'}" for s in servers.values()) + ".",
           "", "Criteria: " + "; ".join(f"{k}: {v}" for k, v in summary["criteria"].items()) + "."]
    open(base + ".md", "w").write("\n".join(md) + "\n")
    print(f"soak-messaging {a.variant}: {verdict}")
    for f in fails:
        print("  FAIL:", f)
    return 0 if verdict == "pass" else 1


if __name__ == "__main__":
    raise SystemExit(main())
