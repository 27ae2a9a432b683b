#!/usr/bin/env bash
# Sequential measurement campaign; every result dir under /tmp/bench/runs
set -u
cd /work/main
export NO_BUILD=1 CARGO_TARGET_DIR=/work/target-lt
R=/tmp/bench/runs; mkdir -p $R
S3="ringhub-uring ringhub-epoll bun"
ALL="ringhub-uring ringhub-epoll bun node-ws tungstenite"
port=9500
run() { # dir servers args...
  local d=$1 s=$2; shift 2
  port=$((port+10))
  echo "=== $d: $* ($s) $(date +%T)"
  SERVERS="$s" BASE_PORT=$port OUT_DIR=$R/$d scripts/compare.sh "$@" > $R/$d.table 2> $R/$d.log
  grep -vE "^compare:" $R/$d.table | sed -n '/^server /,$p' | grep -v " vs " 
}
F="--payload 64 --max --duration 10 --warmup 2"
for i in 2 3; do
  run f1000-$i "$S3" fanout --subscribers 1000 $F
  run f100-$i "$S3" fanout --subscribers 100 $F
  run f10000-$i "$S3" fanout --subscribers 10000 $F
done
for i in 1 2 3; do
  run topics-$i "ringhub-uring ringhub-epoll" fanout --subscribers 10000 --topics 100 --publishers 100 $F
done
run echo-1 "$ALL" echo --connections 100 --pipeline 16 --payload 64 --duration 10 --warmup 2
for i in 2 3; do run echo-$i "$S3" echo --connections 100 --pipeline 16 --payload 64 --duration 10 --warmup 2; done
run connect-1 "$ALL" connect --count 20000 --concurrency 128
for i in 2 3; do run connect-$i "$S3" connect --count 20000 --concurrency 128; done
run idle-1 "$ALL" idle --count 10000 --hold 5
for i in 2 3; do run idle-$i "$S3" idle --count 10000 --hold 5; done
# latency at half of Bun's median max at 1000 subscribers (deliveries/s / 1000 subs / 2 = publications/s)
bunmax=$(jq -s 'map(.msgs_per_s) | sort | .[length/2|floor]' /tmp/bench/sweep1/s1000/bun.json $R/f1000-2/bun.json $R/f1000-3/bun.json)
rate=$(jq -n "$bunmax / 1000 / 2 | floor")
echo "bun median max $bunmax deliveries/s -> rate $rate publications/s" | tee $R/latency-rate.txt
for i in 1 2 3; do
  run lat-$i "$S3" fanout --subscribers 1000 --payload 64 --rate $rate --duration 10 --warmup 2
done
echo "=== done $(date +%T)"
