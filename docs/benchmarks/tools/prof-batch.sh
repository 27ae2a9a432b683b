#!/usr/bin/env bash
cd /tmp/bench
P=./prof.sh
F="fanout --subscribers 1000 --payload 64 --max --duration 10 --warmup 2"
E="echo --connections 100 --pipeline 16 --payload 64 --duration 10 --warmup 2"
for r in 1 2; do
echo "### br-uring-f1000-$r"; $P br-uring-f1000-$r ringhub-uring ringhub $F
echo "### br-epoll-f1000-$r"; $P br-epoll-f1000-$r ringhub-epoll ringhub $F
echo "### br-uring-echo-$r"; $P br-uring-echo-$r ringhub-uring ringhub $E
echo "### br-epoll-echo-$r"; $P br-epoll-echo-$r ringhub-epoll ringhub $E
done
A="--subscribers 1000 --payload 64 --duration 10 --warmup 2"
echo "### an-epoll-4t"; $P an-epoll-4t ringhub-epoll ringhub fanout $A --topics 4 --publishers 4 --rate 20000
echo "### an-epoll-1t"; $P an-epoll-1t ringhub-epoll ringhub fanout $A --publishers 4 --rate 5000
echo "### an-bun-1t"; $P an-bun-1t bun raw fanout $A --publishers 4 --rate 5000
echo "### an-uring-4t"; $P an-uring-4t ringhub-uring ringhub fanout $A --topics 4 --publishers 4 --rate 20000
echo "### lg-epoll-w512"; $P lg-epoll-w512 ringhub-epoll ringhub $F -w 512
for i in 1 2; do (cd /work/main && NO_BUILD=1 CARGO_TARGET_DIR=/work/target-lt SERVERS="ringhub-uring ringhub-epoll bun" BASE_PORT=$((9700+i*10)) OUT_DIR=/tmp/bench/runs/lat500-$i nice -n -20 scripts/compare.sh fanout --subscribers 1000 --payload 64 --rate 500 --duration 10 --warmup 2 > /tmp/bench/runs/lat500-$i.table 2>/tmp/bench/runs/lat500-$i.log); done
echo "### done $(date +%T)"
