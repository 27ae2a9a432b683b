#!/usr/bin/env python3
"""Plot delivered msgs/s against subscriber count for every server, as a standalone SVG.

    scripts/plot.py RESULT.json... [-o fanout.svg] [--title TEXT]

Reads ringhub-loadtest `--json` files of the fanout scenario (as written by
scripts/compare.sh / scripts/sweep.sh), or condensed campaign files written by
scripts/condense.py (every run of every fanout scenario in it; `--scenarios ID,..`, `--runs N,..`
and `--servers NAME,..` keep only those); one line per `label`. When several files hold the same label and
subscriber count (repeated runs), the point is their median. No dependencies.
"""
import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from html import escape

COLORS = ["#d62728", "#ff7f0e", "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
W, H = 760, 460
L, R, T, B = 90, 190, 50, 60  # margins


def load(paths, scenarios=None, runs_kept=None, servers=None):
    runs = defaultdict(lambda: defaultdict(list))
    for p in paths:
        try:
            with open(p) as f:
                d = json.load(f)
        except (OSError, ValueError) as e:
            print(f"plot: skipping {p}: {e}", file=sys.stderr)
            continue
        if "scenarios" in d and "campaign" in d:  # condensed by scripts/condense.py
            for g in d["scenarios"]:
                subs = (g.get("config") or {}).get("subscribers")
                if g.get("scenario") != "fanout" or not subs or (scenarios and g["id"] not in scenarios):
                    continue
                for r in g["runs"]:
                    if runs_kept and r["run"] not in runs_kept:
                        continue
                    for label, x in r["servers"].items():
                        if servers and label not in servers:
                            continue
                        if x.get("msgs_per_s") is not None:
                            runs[label][subs].append(x["msgs_per_s"])
            continue
        if d.get("scenario") != "fanout":
            continue
        subs = d.get("config", {}).get("subscribers")
        rate = d.get("msgs_per_s")
        if subs and rate is not None:
            runs[d.get("label", "?")][subs].append(rate)
    # Repeated runs of one (server, subscribers) point: plot the median, not the last file read.
    return {label: {s: statistics.median(v) for s, v in pts.items()} for label, pts in runs.items()}


def nice_max(v):
    if v <= 0:
        return 1.0
    e = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if m * e >= v:
            return m * e
    return 10 * e


def fmt(v):
    for unit, div in (("M", 1e6), ("k", 1e3)):
        if v >= div:
            s = f"{v / div:.1f}".rstrip("0").rstrip(".")
            return s + unit
    return f"{v:g}"


def svg(series, title):
    xs = sorted({x for s in series.values() for x in s})
    if not xs:
        raise SystemExit("plot: no fanout results found")
    lx0, lx1 = math.log10(xs[0]), math.log10(xs[-1])
    if lx0 == lx1:
        lx0, lx1 = lx0 - 0.5, lx1 + 0.5
    ymax = nice_max(max(v for s in series.values() for v in s.values()))
    pw, ph = W - L - R, H - T - B

    def px(x):
        return L + (math.log10(x) - lx0) / (lx1 - lx0) * pw

    def py(y):
        return T + ph - y / ymax * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{L + pw / 2}" y="25" text-anchor="middle" font-size="15">{escape(title)}</text>']
    for i in range(6):
        y = ymax * i / 5
        out.append(f'<line x1="{L}" x2="{L + pw}" y1="{py(y):.1f}" y2="{py(y):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{L - 8}" y="{py(y) + 4:.1f}" text-anchor="end">{fmt(y)}</text>')
    for x in xs:
        out.append(f'<line x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{T}" y2="{T + ph}" stroke="#eee"/>')
        out.append(f'<text x="{px(x):.1f}" y="{T + ph + 18}" text-anchor="middle">{x:,}</text>')
    out.append(f'<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>')
    out.append(f'<text x="{L + pw / 2}" y="{H - 15}" text-anchor="middle">subscribers (log scale)</text>')
    out.append(f'<text transform="translate(22,{T + ph / 2}) rotate(-90)" text-anchor="middle">'
               'delivered msgs/s</text>')
    for i, (label, pts) in enumerate(sorted(series.items())):
        c = COLORS[i % len(COLORS)]
        coords = [(px(x), py(pts[x])) for x in sorted(pts)]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        out.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="2"/>')
        for (x, y), sx in zip(coords, sorted(pts)):
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{c}">'
                       f'<title>{escape(label)}: {sx} subscribers, {pts[sx]:,.0f} msgs/s</title></circle>')
        ly = T + 10 + i * 20
        out.append(f'<line x1="{L + pw + 15}" x2="{L + pw + 40}" y1="{ly}" y2="{ly}" stroke="{c}" stroke-width="2"/>')
        out.append(f'<text x="{L + pw + 46}" y="{ly + 4}">{escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("-o", "--output", default="fanout.svg")
    ap.add_argument("--title", default="ringhub fan-out: delivered msgs/s vs subscribers")
    ap.add_argument("--scenarios", help="condensed files: only these scenario ids (comma list)")
    ap.add_argument("--runs", help="condensed files: only these run numbers (comma list)")
    ap.add_argument("--servers", help="condensed files: only these servers (comma list)")
    a = ap.parse_args()
    with open(a.output, "w") as f:
        f.write(svg(load(a.files, a.scenarios and a.scenarios.split(","),
                         a.runs and [int(x) for x in a.runs.split(",")],
                         a.servers and a.servers.split(",")), a.title))
    print(f"plot: wrote {a.output}")


if __name__ == "__main__":
    main()
