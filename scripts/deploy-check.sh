#!/usr/bin/env bash
# End-to-end check of deploy/nginx.conf and deploy/haproxy.cfg (docs/DEPLOYMENT.md): its own
# redis-server, two ringhub nodes joined through it, then each proxy in turn — the shipped file
# with only addresses, certificate, log and size settings substituted — on free ports, and
# WebSocket/SSE clients through the proxy over TLS (scripts/deploy-check.mjs).
#
# Run by hand (not in CI). Needs: redis-server, nginx, haproxy, node >= 20, openssl, curl,
# python3 (free ports). Builds the release binary unless NO_BUILD=1 (or RINGHUB_BIN is set).
#
#   scripts/deploy-check.sh                 # both proxies
#   PROXIES=nginx scripts/deploy-check.sh   # one
#   IO=epoll scripts/deploy-check.sh        # nodes on epoll (default: auto)
#
# Prints "ok: ..." per check; exits non-zero at the first failure. Everything it started is
# stopped on exit (by process id).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PROXIES=${PROXIES:-"nginx haproxy"}
TMP=$(mktemp -d /tmp/ringhub-deploy-check.XXXXXX)
PIDS=()

cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [[ ${KEEP_TMP:-0} == 1 ]]; then echo "logs kept in $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

die() { echo "FAIL: $*"; for f in "$TMP"/*.log; do echo "--- $f"; tail -n 20 "$f"; done; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# until CMD succeeds, at most $1 seconds (polling, not sleeping to synchronise).
poll() {
  local secs=$1; shift
  local end=$((SECONDS + secs))
  until "$@"; do
    ((SECONDS < end)) || return 1
    sleep 0.1
  done
}
http_status() { curl -sk -o /dev/null -w '%{http_code}' --max-time 2 "$1" || true; }
is_status() { [[ $(http_status "$2") == "$1" ]]; }

for tool in redis-server redis-cli node openssl curl python3; do
  command -v "$tool" >/dev/null || die "$tool is not installed"
done

if [[ -n ${RINGHUB_BIN:-} ]]; then
  BIN=$RINGHUB_BIN
else
  TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
  [[ ${NO_BUILD:-0} == 1 ]] || (cd "$ROOT" && cargo build --release -p ringhub --bin ringhub)
  BIN=$TARGET/release/ringhub
fi
[[ -x $BIN ]] || die "no binary at $BIN"

# --- Redis and two nodes ---------------------------------------------------------------------
REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$TMP" \
  >"$TMP/redis.log" 2>&1 &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
poll 10 redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 || die "redis-server did not start"
echo "ok: redis-server on :$REDIS_PORT"

NODE_PIDS=("" "")
P1=""
P2=""
start_node() { # index, port
  local i=$1 port=$2
  RINGHUB_CLUSTER_REDIS=redis://127.0.0.1:$REDIS_PORT \
  RINGHUB_LIMITS_MAX_CONNECTIONS_PER_IP=0 \
    "$BIN" --listen "127.0.0.1:$port" --node "hub-$i" --store-path "$TMP/store-$i" --shards 1 --io "${IO:-auto}" \
      --drain-delay 5s --shutdown-timeout 5s --stats-interval 0s \
      >>"$TMP/hub-$i.log" 2>&1 &
  NODE_PIDS[$((i - 1))]=$!
  PIDS+=("$!")
  poll 20 is_status 200 "http://127.0.0.1:$port/readyz" || die "hub-$i not ready"
}
# A fresh pair of nodes for each proxy (new ports, nothing remembered from the last one).
start_nodes() {
  P1=$(free_port)
  P2=$(free_port)
  start_node 1 "$P1"
  start_node 2 "$P2"
  echo "ok: hub-1 on :$P1 and hub-2 on :$P2 joined through redis :$REDIS_PORT, ready (/readyz 200)"
  grep -h "I/O backend" "$TMP/hub-1.log" | tail -n 1 | sed 's/^.*INFO /   /; s/^.*WARN /   /'
  STORE=$(grep -ho 'store thread started store="[a-z]*"' "$TMP/hub-1.log" | tail -n 1 | cut -d'"' -f2)
  echo "   store: ${STORE:-unknown}"
}
stop_nodes() {
  for p in "${NODE_PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
}

openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost -days 1 \
  -keyout "$TMP/key.pem" -out "$TMP/cert.pem" >/dev/null 2>&1 || die "openssl"
cat "$TMP/cert.pem" "$TMP/key.pem" >"$TMP/both.pem"

# Clients send a token in the query string (ignored: no auth key is set) so that the access logs
# can be checked for not recording it.
TOKEN=deploy-check-secret-$RANDOM
client() { NODE_TLS_REJECT_UNAUTHORIZED=0 node --no-warnings --experimental-websocket \
  "$ROOT/scripts/deploy-check.mjs" "$@"; }

# Topics with history cross nodes only with the Redis store (chosen with [cluster] redis once
# it is merged); with a per-node store the check is skipped, and said so.
history_check() {
  if [[ $STORE == redis ]]; then
    client history "$1" || die "history across nodes through $2"
  else
    echo "skip: history and recovery across nodes need the Redis store (this build's store: ${STORE:-unknown})"
  fi
}

# Drains hub-2 through the proxy, starts it again (same name, as a rolling restart does), and
# checks that publications cross nodes in both directions again. That last check is recorded
# and the run goes on (the next proxy gets fresh nodes), so one failure does not hide the rest.
FAILED=()
drain_and_restart() {
  local ws=$1
  client drain "$ws" hub-2 "${NODE_PIDS[1]}" || die "drain through $2"
  poll 20 bash -c "! kill -0 ${NODE_PIDS[1]} 2>/dev/null" || die "hub-2 did not exit after SIGTERM"
  wait "${NODE_PIDS[1]}" 2>/dev/null || true
  grep -q "shutdown complete" "$TMP/hub-2.log" || die "hub-2 did not log 'shutdown complete'"
  echo "ok: hub-2 exited cleanly after SIGTERM ('shutdown complete')"
  start_node 2 "$P2"
  # The proxy takes the restarted node back after its fail_timeout (nginx) or `rise` checks
  # (HAProxy): poll until connections land on both nodes, then publish once each way.
  poll 30 client spread "$ws" >/dev/null 2>&1 || die "$2 did not route to the restarted hub-2"
  if client cross "$ws" >"$TMP/after-restart.out" 2>&1; then
    echo "ok: after hub-2's restart (same node name) publications cross nodes both ways through $2"
  else
    local dup
    dup=$(curl -s "http://127.0.0.1:$P1/metrics" | awk '/^ringhub_cluster_duplicates_total / { print $2 }')
    echo "FAIL: after hub-2's restart (same node name), publications do not cross nodes through $2:"
    sed 's/^/     /' "$TMP/after-restart.out" | tail -n 3
    echo "     hub-1 ringhub_cluster_duplicates_total = $dup (publications dropped as duplicates)"
    FAILED+=("restart through $2")
  fi
}

# --- nginx -----------------------------------------------------------------------------------
check_nginx() {
  command -v nginx >/dev/null || die "nginx is not installed (apt-get install nginx-light)"
  start_nodes
  local http tls conf=$TMP/nginx.conf
  http=$(free_port)
  tls=$(free_port)
  local WS="wss://127.0.0.1:$tls/ws?token=$TOKEN"
  mkdir -p "$TMP/nginx"
  sed -e '/^user /d' \
      -e "s#^pid .*#pid $TMP/nginx.pid;#" \
      -e 's#worker_rlimit_nofile .*#worker_rlimit_nofile 4096;#' \
      -e 's#worker_connections .*#worker_connections 1024;#' \
      -e "s#/var/log/nginx/#$TMP/nginx-#" \
      -e "s#server 10.0.0.11:8080#server 127.0.0.1:$P1#" \
      -e "s#server 10.0.0.12:8080#server 127.0.0.1:$P2#" \
      -e '/server 10.0.0.13:8080/d' \
      -e '/listen \[::\]/d' \
      -e "s#listen 80;#listen 127.0.0.1:$http;#" \
      -e "s#listen 443 ssl;#listen 127.0.0.1:$tls ssl;#" \
      -e "s#/etc/nginx/tls/hub.example.com.fullchain.pem#$TMP/cert.pem#" \
      -e "s#/etc/nginx/tls/hub.example.com.key.pem#$TMP/key.pem#" \
      "$ROOT/deploy/nginx.conf" >"$conf"
  grep -q "127.0.0.1:$P2" "$conf" && grep -q "127.0.0.1:$tls ssl" "$conf" || die "nginx.conf substitution"
  nginx -t -q -p "$TMP/nginx" -e "$TMP/nginx-startup.log" -c "$conf" || die "nginx -t"
  echo "ok: nginx -t accepts deploy/nginx.conf (test addresses substituted)"
  nginx -p "$TMP/nginx" -e "$TMP/nginx-startup.log" -c "$conf" -g 'daemon off;' \
    >"$TMP/nginx.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  poll 10 is_status 426 "https://127.0.0.1:$tls/ws" || die "nginx not answering on :$tls"
  is_status 301 "http://127.0.0.1:$http/ws" || die "nginx: port 80 does not redirect to https"
  is_status 404 "https://127.0.0.1:$tls/readyz" || die "nginx: /readyz should not be public"
  echo "ok: nginx on :$tls (TLS) — plain /ws answered 426 by a node, http redirects, /readyz hidden"
  client cross "$WS" || die "cross-node through nginx"
  client sse "https://127.0.0.1:$tls" || die "SSE through nginx"
  history_check "$WS" nginx
  drain_and_restart "$WS" nginx
  grep -q "GET /ws" "$TMP/nginx-ringhub.access.log" || die "nginx access log is empty"
  if grep -q "$TOKEN" "$TMP/nginx-ringhub.access.log"; then die "nginx logged the token"; fi
  echo "ok: nginx access log records /ws without the token"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  stop_nodes
  echo "ok: nginx done"
}

# --- HAProxy ---------------------------------------------------------------------------------
check_haproxy() {
  command -v haproxy >/dev/null || die "haproxy is not installed (apt-get install haproxy)"
  start_nodes
  local http tls conf=$TMP/haproxy.cfg
  http=$(free_port)
  tls=$(free_port)
  local WS="wss://127.0.0.1:$tls/ws?token=$TOKEN"
  sed -e 's#log /dev/log local0#log stdout format raw local0#' \
      -e 's#maxconn 1000000#maxconn 4096#' \
      -e "s#bind :80\$#bind 127.0.0.1:$http#" \
      -e "s#bind :443 ssl crt [^ ]*#bind 127.0.0.1:$tls ssl crt $TMP/both.pem#" \
      -e "s#server hub-1 10.0.0.11:8080#server hub-1 127.0.0.1:$P1#" \
      -e "s#server hub-2 10.0.0.12:8080#server hub-2 127.0.0.1:$P2#" \
      -e '/server hub-3 /d' \
      "$ROOT/deploy/haproxy.cfg" >"$conf"
  grep -q "127.0.0.1:$P2" "$conf" && grep -q "127.0.0.1:$tls ssl" "$conf" || die "haproxy.cfg substitution"
  haproxy -q -c -f "$conf" || die "haproxy -c"
  echo "ok: haproxy -c accepts deploy/haproxy.cfg (test addresses substituted)"
  haproxy -db -f "$conf" >"$TMP/haproxy.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  poll 10 is_status 426 "https://127.0.0.1:$tls/ws" || die "haproxy not answering on :$tls"
  is_status 301 "http://127.0.0.1:$http/ws" || die "haproxy: port 80 does not redirect to https"
  is_status 404 "https://127.0.0.1:$tls/readyz" || die "haproxy: /readyz should not be public"
  echo "ok: haproxy on :$tls (TLS) — plain /ws answered 426 by a node, http redirects, /readyz hidden"
  client cross "$WS" || die "cross-node through haproxy"
  client sse "https://127.0.0.1:$tls" || die "SSE through haproxy"
  history_check "$WS" haproxy
  # Redis down: every node's /readyz says why with 503, HAProxy marks them down and refuses new
  # clients; Redis back: the nodes reconnect by themselves and HAProxy lets clients in again.
  kill "$REDIS_PID"
  wait "$REDIS_PID" 2>/dev/null || true
  poll 15 is_status 503 "http://127.0.0.1:$P1/readyz" || die "hub-1 /readyz not 503 with Redis down"
  echo "   hub-1 /readyz: $(curl -s "http://127.0.0.1:$P1/readyz")"
  poll 15 is_status 503 "https://127.0.0.1:$tls/ws" || die "haproxy still routes with Redis down"
  client refused "$WS" || die "upgrade accepted with Redis down"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$TMP" \
    >>"$TMP/redis.log" 2>&1 &
  REDIS_PID=$!
  PIDS+=("$REDIS_PID")
  poll 30 is_status 200 "http://127.0.0.1:$P1/readyz" || die "hub-1 not ready after Redis came back"
  poll 30 is_status 200 "http://127.0.0.1:$P2/readyz" || die "hub-2 not ready after Redis came back"
  # HAProxy takes each node back after `rise` passing checks.
  poll 30 client spread "$WS" >/dev/null 2>&1 || die "haproxy did not route to both nodes again"
  client cross "$WS" || die "cross-node after the Redis restart"
  echo "ok: after Redis restarted, nodes reconnected without a restart and publications cross nodes again"
  drain_and_restart "$WS" haproxy
  grep -q "/ws" "$TMP/haproxy.log" || die "haproxy log is empty"
  if grep -q "$TOKEN" "$TMP/haproxy.log"; then die "haproxy logged the token"; fi
  echo "ok: haproxy log records /ws without the token"
  curl -s "http://127.0.0.1:$P1/metrics" | grep '^ringhub_cluster_' | sed 's/^/   hub-1 /'
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  stop_nodes
  echo "ok: haproxy done"
}

for p in $PROXIES; do
  case $p in
    nginx) check_nginx ;;
    haproxy) check_haproxy ;;
    *) die "unknown proxy $p" ;;
  esac
done
if ((${#FAILED[@]})); then
  echo "FAIL: ${#FAILED[@]} check(s) failed: ${FAILED[*]}"
  exit 1
fi
echo "ok: all checks passed ($PROXIES)"
