#!/usr/bin/env bash
# The loopback floors behind two of our "not reachable" claims, measured by plain C programs
# that do nothing but the system calls (no protocol, no parsing, no allocation):
#   fanfloor  one write() of MSG bytes to each of N TCP sockets per round, one round in flight
#             (the W = 1 fan-out): the writer's CPU per delivery is what the kernel charges a
#             server for one small write on loopback (the receiver's softirq work included);
#   pingpong  one request in flight on one TCP connection, both ends in epoll_wait (the W = 1
#             HTTP API round trip): the round trip with no server work at all.
# Usage: [PRIO=rt] [RUNS=3] [SECONDS=3] [N=1000] [MSG=80] [REQ=200] [RESP=150] scripts/loopback-floor.sh
# Writer/server on CPU 0, reader/client on CPU 1 (as the benches pin server and generator).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
RUNS=${RUNS:-3} SECONDS_=${SECONDS:-3} N=${N:-1000} MSG=${MSG:-80} REQ=${REQ:-200} RESP=${RESP:-150}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
gcc -O2 -o "$out/fanfloor" "$here/floor/fanfloor.c"
gcc -O2 -o "$out/pingpong" "$here/floor/pingpong.c"
ulimit -n 20000
prio=()
[ "${PRIO:-}" = rt ] && prio=(chrt -f 50)
for r in $(seq "$RUNS"); do
  "${prio[@]}" "$out/fanfloor" "$N" "$SECONDS_" "$MSG"
  "${prio[@]}" "$out/pingpong" "$SECONDS_" "$REQ" "$RESP"
done
