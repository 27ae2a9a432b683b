#!/usr/bin/env python3
"""Summarises scripts/deflate-compare.sh output (stdin): medians over the runs of bytes and
server CPU per delivery, and ratios taken within each run, then their median.

    scripts/deflate-compare.py < docs/benchmarks/deflate-compare.txt
"""
import statistics
import sys
from collections import defaultdict

rows = {}  # (run, server, size, w, mode) -> (bytes, cpu)
for line in sys.stdin:
    f = line.split()
    if len(f) != 8 or not f[0].isdigit():
        continue
    run, server, size, w, mode, b, c, _ = f
    rows[(int(run), server, int(size), int(w), mode)] = (float(b), float(c))

runs = sorted({k[0] for k in rows})
cases = sorted({k[1:] for k in rows}, key=lambda k: (k[1], k[2], k[0], k[3]))


def med(xs):
    return statistics.median(xs) if xs else None


def ratio(a, b, i):
    """Median over runs of rows[a][i] / rows[b][i], and the per-run values."""
    rs = []
    for r in runs:
        x, y = rows.get((r,) + a), rows.get((r,) + b)
        if x and y and y[i]:
            rs.append(x[i] / y[i])
    return med(rs), rs


def fmt(x, nd=2):
    return "—" if x is None else f"{x:.{nd}f}"


print(f"runs: {len(runs)}")
print("\nmedians per case (bytes/delivery, server CPU ns/delivery)")
print("| payload | W | server | mode | bytes/delivery | CPU ns/delivery | CPU ÷ its plain (runs) |")
print("|---|---|---|---|---|---|---|")
for server, size, w, mode in cases:
    bs = [rows[(r, server, size, w, mode)][0] for r in runs if (r, server, size, w, mode) in rows]
    cs = [rows[(r, server, size, w, mode)][1] for r in runs if (r, server, size, w, mode) in rows]
    rm, rs = ratio((server, size, w, mode), (server, size, w, "plain"), 1)
    rr = "" if mode == "plain" else f"{fmt(rm)}× ({', '.join(fmt(x) for x in rs)})"
    print(f"| {size} | {w} | {server} | {mode} | {fmt(med(bs), 1)} | {fmt(med(cs), 0)} | {rr} |")

print("\nringhub ÷ peer, compressed, within each run (CPU per delivery; bytes per delivery)")
print("| payload | W | ringhub | peer (mode) | CPU ratio (runs) | bytes ratio |")
print("|---|---|---|---|---|---|")
sizes = sorted({k[1] for k in cases})
ws = sorted({k[2] for k in cases})
for size in sizes:
    for w in ws:
        for rh in ("ringhub-uring", "ringhub-epoll"):
            for peer, mode in (("uws", "deflate"), ("uws", "prepared"), ("bun", "deflate")):
                a, b = (rh, size, w, "deflate"), (peer, size, w, mode)
                cm, cr = ratio(a, b, 1)
                bm, _ = ratio(a, b, 0)
                if cm is None:
                    continue
                print(f"| {size} | {w} | {rh} | {peer} ({mode}) | {fmt(cm)}× ({', '.join(fmt(x) for x in cr)}) | {fmt(bm)}× |")
