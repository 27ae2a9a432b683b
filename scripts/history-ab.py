#!/usr/bin/env python3
"""Condenses interleaved A/B runs of scripts/messaging-bench.sh PARTS=history (one run per
invocation, see scripts/history-ab.sh) into a Markdown table: per case the median
publications/s of each build, the median of the per-round ratios branch / main, and the
median of the per-run ratios history / no history of each build (taken within one run).

    scripts/history-ab.py OUT_ROOT SHARDS     # reads OUT_ROOT/sh<SHARDS>-{main,after}-r<N>/
"""
import glob
import json
import os
import statistics
import sys


def load(root, sh, build):
    runs = {}
    for d in sorted(glob.glob(f"{root}/sh{sh}-{build}-r*")):
        if not os.path.isdir(d):
            continue
        r = int(d.rsplit("-r", 1)[1])
        for f in glob.glob(f"{d}/*/run-1.json"):
            case = os.path.basename(os.path.dirname(f))
            j = json.load(open(f))
            if not j.get("ok", False) or j["counts"].get("offset_errors"):
                print(f"warning: {f} not ok: {j.get('failures')}", file=sys.stderr)
            runs.setdefault(r, {})[case] = j
    return runs


def k(v):
    return f"{v / 1000:.1f} k" if v < 1e6 else f"{v / 1e6:.2f} M"


def main():
    root, sh = sys.argv[1], sys.argv[2]
    a, b = load(root, sh, "main"), load(root, sh, "after")
    rounds = sorted(set(a) & set(b))
    print(f"rounds: {rounds}")
    print("| S | W | none main / branch | history main | history branch | branch ÷ main (per round) "
          "| history ÷ none main | history ÷ none branch (per run) | p50 history main / branch "
          "| CPU µs/pub history main / branch |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    cases = sorted({c for r in rounds for c in b[r] if c.startswith("hist-")},
                   key=lambda c: (int(c.split("-s")[1].split("-")[0]), int(c.split("-w")[1])))
    for c in cases:
        s = c.split("-s")[1].split("-")[0]
        w = c.split("-w")[1]
        none = c.replace("hist-memory", "nohist")
        rate = lambda runs, r, case: runs[r][case]["published_per_s"]
        ok = [r for r in rounds if c in a[r] and c in b[r] and none in a[r] and none in b[r]]
        if not ok:
            continue
        ha = [rate(a, r, c) for r in ok]
        hb = [rate(b, r, c) for r in ok]
        na = [rate(a, r, none) for r in ok]
        nb = [rate(b, r, none) for r in ok]
        ab = [rate(b, r, c) / rate(a, r, c) for r in ok]
        ra = [rate(a, r, c) / rate(a, r, none) for r in ok]
        rb = [rate(b, r, c) / rate(b, r, none) for r in ok]
        p50 = lambda runs, case: statistics.median(runs[r][case]["latency_us"]["p50"] for r in ok)

        def cpu(runs, case):
            v = [runs[r][case]["server"]["cpu_s"] * 1e6
                 / max(1, runs[r][case]["counts"]["published"]) for r in ok]
            return statistics.median(v)

        med = statistics.median
        print(f"| {s} | {w} | {k(med(na))} / {k(med(nb))} | {k(med(ha))} | **{k(med(hb))}** "
              f"| {med(ab):.2f}× ({', '.join(f'{x:.2f}' for x in ab)}) | {med(ra):.2f}× "
              f"| **{med(rb):.2f}×** ({', '.join(f'{x:.2f}' for x in rb)}) "
              f"| {p50(a, c):.0f} / {p50(b, c):.0f} µs | {cpu(a, c):.2f} / {cpu(b, c):.2f} |")


if __name__ == "__main__":
    main()
