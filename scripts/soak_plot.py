#!/usr/bin/env python3
"""Plot a soak run (scripts/soak.sh) as a standalone SVG: server RSS and open descriptors over time.

    scripts/soak_plot.py target/soak/soak-uring.csv [--summary soak-uring.json] -o soak-uring.svg

Two panels sharing the time axis: RSS (MiB) on top, open file descriptors below; one line per
server (plain, TLS). With --summary, the load window is shaded and the RSS bound and descriptor
baselines are drawn dashed. Written by hand like plot.py: no dependencies.
"""
import argparse
import csv
import json
import math
from html import escape

W, H = 860, 560
L, R, T, B = 80, 150, 50, 50
GAP = 40
COLORS = {"plain": "#1f77b4", "tls": "#d62728"}


def nice_max(v):
    if v <= 0:
        return 1.0
    e = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if m * e >= v:
            return m * e
    return 10 * e


def ticks(vmax, n=5):
    step = nice_max(vmax / n)
    return [i * step for i in range(int(vmax / step) + 1)]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("csv")
    p.add_argument("--summary")
    p.add_argument("-o", "--out", required=True)
    p.add_argument("--title")
    a = p.parse_args()
    rows = list(csv.DictReader(open(a.csv)))
    if not rows:
        raise SystemExit("soak_plot: no samples")
    summ = json.load(open(a.summary)) if a.summary else {}
    t = [float(r["t"]) for r in rows]
    series = {
        "rss": {s: [int(r[f"{s}_rss_kb"]) / 1024 for r in rows] for s in ("plain", "tls")},
        "fds": {s: [int(r[f"{s}_fds"]) for r in rows] for s in ("plain", "tls")},
    }
    servers = summ.get("servers", {})
    refs = {"rss": {}, "fds": {}}
    for s, d in servers.items():
        r0 = d.get("rss_baseline_kb")
        if isinstance(r0, int):
            bound = max(r0 * (100 + summ.get("rss_slack_pct", 25)) / 100, r0 + summ.get("rss_slack_mb", 12) * 1024)
            refs["rss"][s] = bound / 1024
        if isinstance(d.get("fd_baseline"), int):
            refs["fds"][s] = d["fd_baseline"]
    tmax = nice_max(max(t)) if max(t) > 0 else 1
    pw, ph = W - L - R, (H - T - B - GAP) / 2
    x = lambda v: L + pw * v / tmax
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
    ]
    title = a.title or f"ringhub soak, --io {summ.get('io', '?')}: {summ.get('duration_s', '?')} s load" + (
        f" — {summ['verdict']}" if "verdict" in summ else ""
    )
    out.append(f'<text x="{W / 2}" y="24" text-anchor="middle" font-size="15">{escape(title)}</text>')
    for i, (key, label) in enumerate((("rss", "RSS (MiB)"), ("fds", "open descriptors"))):
        top = T + i * (ph + GAP)
        vals = [v for s in series[key].values() for v in s] + list(refs[key].values())
        vmax = nice_max(max(vals) * 1.1 if vals else 1)
        y = lambda v, top=top, vmax=vmax: top + ph - ph * v / vmax
        if "load_start_s" in summ and "load_end_s" in summ:
            x0, x1 = x(float(summ["load_start_s"])), x(float(summ["load_end_s"]))
            out.append(f'<rect x="{x0:.1f}" y="{top}" width="{x1 - x0:.1f}" height="{ph}" fill="#f3f3f3"/>')
            if i == 0:
                out.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{top + 14}" text-anchor="middle" fill="#888">load</text>')
        for v in ticks(vmax):
            out.append(f'<line x1="{L}" x2="{L + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e4e4e4"/>')
            out.append(f'<text x="{L - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
        for v in ticks(tmax, 10):
            out.append(f'<text x="{x(v):.1f}" y="{top + ph + 15}" text-anchor="middle">{v:g}</text>')
        out.append(f'<rect x="{L}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>')
        out.append(
            f'<text transform="translate({L - 52},{top + ph / 2}) rotate(-90)" text-anchor="middle">{label}</text>'
        )
        ly = top + 20
        for s, ys in series[key].items():
            pts = " ".join(f"{x(tv):.1f},{y(v):.1f}" for tv, v in zip(t, ys))
            out.append(f'<polyline points="{pts}" fill="none" stroke="{COLORS[s]}" stroke-width="1.6"/>')
            out.append(f'<line x1="{L + pw + 12}" x2="{L + pw + 32}" y1="{ly}" y2="{ly}" stroke="{COLORS[s]}" stroke-width="2"/>')
            out.append(f'<text x="{L + pw + 38}" y="{ly + 4}">{s}</text>')
            ly += 18
            if s in refs[key]:
                rv = refs[key][s]
                what = "bound" if key == "rss" else "baseline"
                out.append(
                    f'<line x1="{L}" x2="{L + pw}" y1="{y(rv):.1f}" y2="{y(rv):.1f}" stroke="{COLORS[s]}" '
                    f'stroke-dasharray="5,4" stroke-width="1"/>'
                )
                out.append(f'<text x="{L + pw + 38}" y="{ly + 4}" fill="{COLORS[s]}">{s} {what} {rv:.4g}</text>')
                out.append(
                    f'<line x1="{L + pw + 12}" x2="{L + pw + 32}" y1="{ly}" y2="{ly}" stroke="{COLORS[s]}" stroke-dasharray="5,4"/>'
                )
                ly += 18
    out.append(f'<text x="{L + pw / 2}" y="{H - 12}" text-anchor="middle">seconds since the servers started</text>')
    out.append("</svg>")
    with open(a.out, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
