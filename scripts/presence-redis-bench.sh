#!/usr/bin/env bash
# Redis-side cost of a cluster presence read (the Lua script of src/cluster/redis/presence.rs:
# drop expired members, return HVALS) for topics of 10, 100 and 1000 entries, on a
# redis-server of its own (free port, no persistence). Usage: scripts/presence-redis-bench.sh
set -euo pipefail
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
pid=$!
trap 'kill $pid' EXIT
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done
# The script, exactly as the node sends it (extracted from the Rust source).
script=$(sed -n '/^const READ: &str = r"/,/^";/p' "$(dirname "$0")/../src/cluster/redis/presence.rs" | sed '1d;$d')
future=$(( $(date +%s) * 1000 + 3600000 ))
for n in 10 100 1000; do
  h="ringhub:p:chat:n$n"; z="ringhub:px:chat:n$n"
  for ((i = 0; i < n; i++)); do
    c="node1.$(printf '%x' $((i + 4096)))"
    echo "HSET $h $c '{\"client\":\"$c\",\"user\":\"user$i\"}'"
    echo "ZADD $z $future $c"
  done | redis-cli -p "$port" >/dev/null
  echo "== presence read, $n entries (EVAL: ZRANGEBYSCORE nothing expired + HVALS)"
  redis-benchmark -p "$port" -c 4 -n 20000 --csv EVAL "$script" 2 "$h" "$z" "$(( future - 7200000 ))" \
    | tail -n 1 | awk -F'","' '{n = NF;
        printf "%s reads/s, p50 %s ms, p99 %s ms\n", $(n - 6), $(n - 3), $(n - 1)}'
done
