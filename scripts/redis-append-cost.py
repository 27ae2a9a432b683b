#!/usr/bin/env python3
"""Where Redis's CPU goes in the history append script, without the nodes: one redis-server on
core 0 (no persistence), NODES subscribers of the topic's channel (redis-cli on core 1), and a
pipeline of CALLS append-script calls of W publications each on one topic (64-byte JSON data,
event `message`), written as the store writes them. Before and after the runs: `INFO cpu` (the
Redis process's CPU, so the writes to the subscribers count too) and `INFO commandstats` (the
script's inner commands counted apart). Per publication, median of RUNS runs (interleaved):

  scripts/redis-append-cost.py                 # main's append.lua vs the working tree's
  OLD_REF=<git ref> W=16 RUNS=5 scripts/redis-append-cost.py

`old` is `src/store/redis/append.lua` at OLD_REF (default main), `new` the working tree's, each
called with the arguments its text asks for: one PUBLISH per publication (wire kind 'S') or one
per topic per call ('B') when it mentions 'B'; four arguments per publication, or one per run of
publications of a topic when it reads runs.

  CALLGRIND=1 scripts/redis-append-cost.py     # instructions instead of CPU time (no lock needed)

runs Redis under `valgrind --tool=callgrind` (deterministic, ~50× slower): each kind once with
CALLS and once with 3 × CALLS calls (CALLS default 200 there); the difference of the two totals
per publication is the instructions Redis spends per publication, startup and setup excluded.
"""
import os, socket, statistics, struct, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
W = int(os.environ.get('W', 64))
CALLS = int(os.environ.get('CALLS', 2000))
RUNS = int(os.environ.get('RUNS', 3))
NODES = int(os.environ.get('NODES', 3))
PORT = int(os.environ.get('PORT', 7391))
OLD_REF = os.environ.get('OLD_REF', 'main')
CALLGRIND = os.environ.get('CALLGRIND') == '1'
if CALLGRIND and 'CALLS' not in os.environ:
    CALLS = 200
LUA = 'src/store/redis/'


def git_show(path):
    return subprocess.run(['git', '-C', ROOT, 'show', f'{OLD_REF}:{path}'], check=True,
                          capture_output=True, text=True).stdout


SCRIPTS = {
    'old': git_show(LUA + 'meta.lua') + git_show(LUA + 'append.lua'),
    'new': open(os.path.join(ROOT, LUA, 'meta.lua')).read() + open(os.path.join(ROOT, LUA, 'append.lua')).read(),
}
BATCHED = {k: "'B'" in v for k, v in SCRIPTS.items()}
# Publications in runs (one argument per run of one topic: the parts joined) since issue 20's
# `redislua`; before, four arguments per publication.
RUNS_OF_PARTS = {k: '(j * 1024 + count)' in v for k, v in SCRIPTS.items()}


def bulk(b):
    return b'$%d\r\n%s\r\n' % (len(b), b)


def cmd(args):
    return b'*%d\r\n' % len(args) + b''.join(bulk(a) for a in args)


def item(event, data, exclude):
    return struct.pack('>H', len(event)) + event + struct.pack('>I', len(data)) + data + struct.pack('>Q', exclude)


def header(kind, seq, topic):
    origin = b'n1~s'
    return b'R' + kind + bytes([len(origin)]) + origin + struct.pack('>Q', seq) + struct.pack('>H', len(topic)) + topic


DATA = b'{"n":12345,"text":"' + b'x' * 41 + b'"}'
TOPIC = b'hist:t0'
seq = 0


def call(batched, sha, runs=False):
    """One call of the append script, as `store/redis/append.rs` writes it."""
    global seq
    keys = [b'rh:inbox_epoch', b'rh:h:' + TOPIC, b'rh:hm:' + TOPIC]
    now = int(time.time() * 1000)
    args = [b'0a1b2c3d', b'%d' % (now + 60000), b'%d' % now, b'1', b'100', b'0', b'rh:t:' + TOPIC]
    if batched:
        seq += 1
        args.append(header(b'B', seq, TOPIC))
    if runs:
        # One run of W publications of topic 1: its header, then its parts joined.
        args += [b'%d' % ((1 * 1024 + W) * 2), b''.join(item(b'message', DATA, 0) for _ in range(W))]
        return cmd([b'EVALSHA', sha, b'%d' % len(keys)] + keys + args)
    for _ in range(W):
        args += [b'3', b'message', DATA]
        if batched:
            args.append(item(b'message', DATA, 0))
        else:
            seq += 1
            args.append(header(b'S', seq, TOPIC) + item(b'message', DATA, 0))
    return cmd([b'EVALSHA', sha, b'%d' % len(keys)] + keys + args)


def reply(f):
    line = f.readline()
    t = line[:1]
    if t == b'$' and int(line[1:]) >= 0:
        f.read(int(line[1:]) + 2)
    elif t == b'*':
        for _ in range(max(0, int(line[1:]))):
            reply(f)
    elif t not in b'+-:$':
        raise RuntimeError(line)
    return line


def info(s, f, section):
    s.sendall(cmd([b'INFO', section]))
    n = int(f.readline()[1:])
    return f.read(n + 2).decode()


def cpu(s, f):
    kv = dict(x.split(':', 1) for x in info(s, f, b'cpu').splitlines() if ':' in x)
    return float(kv['used_cpu_sys']) + float(kv['used_cpu_user'])


def free_port(port):
    while True:
        try:
            socket.create_connection(('127.0.0.1', port)).close()
            port += 1
        except OSError:
            return port


def run(kind, calls=None):
    global PORT
    calls = calls or CALLS
    PORT = free_port(PORT)
    out = f'/tmp/redis-append-cost.{os.getpid()}.callgrind'
    grind = ['valgrind', '--tool=callgrind', f'--callgrind-out-file={out}'] if CALLGRIND else []
    redis = subprocess.Popen(['taskset', '-c', '0'] + grind + ['redis-server', '--port', str(PORT), '--bind', '127.0.0.1',
                              '--save', '', '--appendonly', 'no'], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL if CALLGRIND else None)
    subs = []
    try:
        for _ in range(1000):
            try:
                s = socket.create_connection(('127.0.0.1', PORT))
                break
            except OSError:
                time.sleep(0.05)
        f = s.makefile('rb')
        channel = 'rh:t:' + TOPIC.decode()
        subs = [subprocess.Popen(['taskset', '-c', '1', 'redis-cli', '-p', str(PORT), 'SUBSCRIBE', channel],
                                 stdout=subprocess.DEVNULL) for _ in range(NODES)]
        while True:
            s.sendall(cmd([b'PUBSUB', b'NUMSUB', channel.encode()]))
            f.readline(); reply(f); n = int(f.readline()[1:])
            if n == NODES:
                break
            time.sleep(0.05)
        s.sendall(cmd([b'SCRIPT', b'LOAD', SCRIPTS[kind].encode()]))
        f.readline()
        sha = f.readline().strip()
        s.sendall(cmd([b'CONFIG', b'RESETSTAT']))
        f.readline()
        cpu0 = cpu(s, f)
        for _ in range(0, calls, 50):
            s.sendall(b''.join(call(BATCHED[kind], sha, RUNS_OF_PARTS[kind]) for _ in range(50)))
            for _ in range(50):
                if reply(f).startswith(b'-'):
                    raise RuntimeError(f'{kind}: the script failed')
        cpu1 = cpu(s, f)
        stats = {}
        for line in info(s, f, b'commandstats').splitlines():
            if line.startswith('cmdstat_'):
                name, rest = line[8:].split(':', 1)
                kv = dict(x.split('=') for x in rest.split(','))
                if name not in ('config|resetstat', 'info', 'pubsub|numsub', 'script|load'):
                    stats[name] = (int(kv['calls']), int(kv['usec']))
        return cpu1 - cpu0, stats
    finally:
        for p in subs:
            p.kill()
        if CALLGRIND:
            redis.terminate()  # callgrind writes its totals on exit
        else:
            redis.kill()
        redis.wait()


def instructions(kind, calls):
    """Redis's instruction count (callgrind) over a whole run of `calls` calls."""
    run(kind, calls)
    out = f'/tmp/redis-append-cost.{os.getpid()}.callgrind'
    with open(out) as f:
        total = next(int(line.split()[1]) for line in f if line.startswith('totals:'))
    os.remove(out)
    return total


def main_callgrind():
    pubs = (CALLS // 50) * 50 * W * 2
    print(f'W={W} publications per call, instructions per publication (callgrind, Redis process, '
          f'runs of {CALLS} and {3 * CALLS} calls, their difference over {pubs} publications)')
    for k in SCRIPTS:
        print(f'{k}: {(instructions(k, 3 * CALLS) - instructions(k, CALLS)) / pubs:,.0f}')


def main():
    if CALLGRIND:
        return main_callgrind()
    pubs = (CALLS // 50) * 50 * W
    res = {k: [] for k in SCRIPTS}
    for _ in range(RUNS):
        for k in SCRIPTS:
            res[k].append(run(k))
    print(f'W={W} publications per call, {pubs} publications per run, {NODES} subscribers, '
          f'median of {RUNS} runs (µs per publication; every run in parentheses)')
    for k, runs in res.items():
        per = [c / pubs * 1e6 for c, _ in runs]
        print(f'{k}: Redis process CPU {statistics.median(per):.2f} ({", ".join(f"{x:.2f}" for x in per)})')
        names = sorted({n for _, st in runs for n in st}, key=lambda n: -runs[0][1].get(n, (0, 0))[1])
        for n in names:
            us = [st.get(n, (0, 0))[1] / pubs for _, st in runs]
            calls = statistics.median(st.get(n, (0, 0))[0] / pubs for _, st in runs)
            print(f'  {n:8} {calls:6.3f} calls, {statistics.median(us):6.3f} µs ({", ".join(f"{x:.2f}" for x in us)})')


if __name__ == '__main__':
    sys.exit(main())
