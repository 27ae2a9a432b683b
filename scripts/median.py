#!/usr/bin/env python3
"""Median table over several scripts/compare.sh result directories of the same scenario.

    scripts/median.py DIR... [--ref bun] [--md]

Every DIR holds NAME.json files written by compare.sh (one run of every server). For each
server it prints the median msgs/s (and every run's value), median p50/p99, median server
CPU s, median server CPU ns per delivered message (fanout: CPU s / counts.delivered, both over
the whole run including warmup and drain; echo: CPU s / echoes), median peak RSS (VmHWM), median
loadtest CPU share, and, per run, the ratio of each server to --ref taken WITHIN that run
(then the median of those ratios).
"""
import argparse
import json
import os
import statistics as st
import sys


def load(d, name):
    p = os.path.join(d, name + ".json")
    try:
        with open(p) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def work_count(j):
    c = j.get("counts") or {}
    for k in ("delivered", "echoed", "received", "completed", "ok"):
        if isinstance(c.get(k), (int, float)) and c.get(k):
            return c[k]
    return None


def med(xs):
    xs = [x for x in xs if x is not None]
    return st.median(xs) if xs else None


def f_rate(v):
    if v is None:
        return "–"
    if v >= 1e6:
        return f"{v / 1e6:.2f} M"
    if v >= 1e3:
        return f"{v / 1e3:.1f} k"
    return f"{v:.0f}"


def f_us(v, ms_digits=1):
    if v is None:
        return "–"
    if v >= 1e6:
        return f"{v / 1e6:.2f} s"
    if v >= 1e3:
        return f"{v / 1e3:.{ms_digits}f} ms"
    return f"{v:.0f} µs"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--ref", default="bun")
    ap.add_argument("--servers", default="ringhub-uring ringhub-epoll bun node-ws tungstenite uws")
    a = ap.parse_args()
    names = a.servers.split()
    rows = []
    print(f"runs: {len(a.dirs)} ({', '.join(a.dirs)})")
    print("| server | msgs/s median (runs) | p50 | p99 | server CPU s | server CPU ns/msg | peak RSS | "
          f"loadtest CPU | ratio vs {a.ref} (within run; runs) | extra |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in names:
        js = [load(d, n) for d in a.dirs]
        refs = [load(d, a.ref) for d in a.dirs]
        if not any(js):
            continue
        rates = [j["msgs_per_s"] if j else None for j in js]
        p50 = [j.get("latency_us", {}).get("p50") if j else None for j in js]
        p99 = [j.get("latency_us", {}).get("p99") if j else None for j in js]
        cpu = [j.get("server", {}).get("cpu_s") if j else None for j in js]
        hwm = [j.get("server", {}).get("hwm_kb") if j else None for j in js]
        lt = [j["loadtest_cpu_s"] / j["loadtest_wall_s"] if j and j.get("loadtest_wall_s") else None
              for j in js]
        nsper = []
        for j in js:
            w = work_count(j) if j else None
            c = j.get("server", {}).get("cpu_s") if j else None
            nsper.append(c / w * 1e9 if w and c is not None else None)
        ratios, p99r = [], []
        for j, r in zip(js, refs):
            if j and r and r.get("msgs_per_s"):
                ratios.append(j["msgs_per_s"] / r["msgs_per_s"])
            rp = (r or {}).get("latency_us", {}).get("p99")
            if j and rp and j.get("latency_us", {}).get("p99"):
                p99r.append(j["latency_us"]["p99"] / rp)
        extra = []
        rpc = [j.get("rss_per_conn_kb") if j else None for j in js]
        if any(x is not None for x in rpc):
            extra.append("RSS/conn " + f"{med(rpc):.2f} kB (" + ", ".join(
                f"{x:.2f}" for x in rpc if x is not None) + ")")
        if p99r:
            extra.append(f"p99 vs {a.ref} {med(p99r):.2f}x (" + ", ".join("%.2f" % x for x in p99r) + ")")
        fails = sum(1 for j in js if j and not j.get("ok", True))
        if fails:
            extra.append(f"{fails} run(s) not ok")
        print(f"| {n} | {f_rate(med(rates))} ({', '.join(f_rate(x) for x in rates)}) | {f_us(med(p50))} | "
              f"{f_us(med(p99))} | {med(cpu) if med(cpu) is not None else '–'} | "
              f"{'%.0f' % med(nsper) if med(nsper) is not None else '–'} | "
              f"{'%.1f MB' % (med(hwm) / 1024) if med(hwm) else '–'} | "
              f"{'%.0f%%' % (100 * med(lt)) if med(lt) is not None else '–'} | "
              f"{'%.2fx' % med(ratios) if ratios else '–'} ({', '.join('%.2f' % r for r in ratios)}) | "
              f"{'; '.join(extra)} |")


if __name__ == "__main__":
    sys.exit(main())
