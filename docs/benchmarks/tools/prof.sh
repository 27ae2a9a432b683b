#!/usr/bin/env bash
# prof.sh NAME SERVER(ringhub-uring|ringhub-epoll|bun) PROTO LOADTEST-ARGS...
# Starts the server on core 0 and the loadtest on core 1 (both nice -5), then, 4 s into the run,
# perf stat (5 s) + perf record -g (5 s) on the server and perf stat + record on the loadtest.
set -u
name=$1 srv=$2 proto=$3; shift 3
O=/tmp/bench/prof/$name; mkdir -p $O
B=/work/target-lt/release
port=$((9800 + RANDOM % 100))
case $srv in
  ringhub-*) nice -n -20 taskset -c 0 $B/ringhub --listen 127.0.0.1:$port --shards 1 --io ${srv#ringhub-} --echo-path /echo > $O/server.log 2>&1 & ;;
  bun) PORT=$port nice -n -20 taskset -c 0 /work/main/scripts/peers/node_modules/@oven/bun-linux-x64/bin/bun /work/main/scripts/peers/bun-server.js > $O/server.log 2>&1 & ;;
esac
SP=$!
sleep 1
nice -n -20 taskset -c 1 $B/ringhub-loadtest "$@" --target 127.0.0.1:$port --protocol $proto --label $srv --json $O/lt.json > $O/lt.txt 2>&1 &
LP=$!
sleep ${PROF_DELAY:-4}
EV=${EV:-task-clock,cycles,instructions,context-switches,cpu-migrations,raw_syscalls:sys_enter}
perf stat -e $EV -p $SP -o $O/server.stat -- sleep 5 &
perf stat -e $EV -p $LP -o $O/lt.stat -- sleep 5 &
[ "${NOREC:-0}" = 1 ] || perf record -F 499 -g -p $SP -o $O/server.data -- sleep 5 > /dev/null 2>&1 &
[ "${NOREC:-0}" = 1 ] || perf record -F 499 -g -p $LP -o $O/lt.data -- sleep 5 > /dev/null 2>&1 &
wait %3 %4 %5 %6 2>/dev/null
wait $LP
kill $SP; wait $SP 2>/dev/null
grep -E "msgs/s|echoes|delivered|latency|loadtest CPU|lag" $O/lt.txt
grep -E "task-clock|instructions|syscalls|context|io_uring|sys_enter" $O/server.stat | sed 's/^/server: /'
grep -E "task-clock|instructions|syscalls|context" $O/lt.stat | sed 's/^/loadtest: /'
