#!/bin/sh
# Tunnel benchmark: the same webhook (and the same origin server for large
# bodies) reached directly on loopback and through relay -> WebSocket/yamux ->
# agent. Prints requests/s with p50/p99 for small responses, MB/s for a large
# response, agent RSS idle and with 1,000 open streams, and the ratios.
# Knobs: BENCH_SECONDS (5), BENCH_CONC (32), BENCH_BULK_MB (100), BENCH_HOLD (1000).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
: "${VM_AGENT_BIN:?set VM_AGENT_BIN}" "${BUILD_DIR:?set BUILD_DIR}"
DUR=${BENCH_SECONDS:-5}
CONC=${BENCH_CONC:-32}
BULK_MB=${BENCH_BULK_MB:-100}
HOLD=${BENCH_HOLD:-1000}

work=$(mktemp -d /tmp/vma-bench-tunnel.XXXXXX)
pids=""
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

export GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= GOPROXY=off CGO_ENABLED=0 \
	GOCACHE="$BUILD_DIR/gocache"
(cd "$root/tests/relay" && go build -o "$work/vm-relay" .)
(cd "$here/loadgen" && go build -o "$work/loadgen" .)

wait_file() { i=0; while [ ! -s "$1" ]; do i=$((i + 1)); [ $i -lt 500 ] || { echo "timeout: $1" >&2; exit 1; }; sleep 0.02; done; }
json_get() { sed -n "s/.*\"$2\":\"\([^\"]*\)\".*/\1/p" "$1"; }
free_port() { "$work/loadgen" freeport; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
anon_kb() { awk '/^RssAnon/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

"$work/loadgen" serve -addr-file "$work/origin.addr" & pids="$pids $!"
"$work/vm-relay" -addr-file "$work/relay.json" >"$work/relay.log" 2>&1 & pids="$pids $!"
pid_relay=$!
wait_file "$work/origin.addr"
wait_file "$work/relay.json"
origin=$(cat "$work/origin.addr")
upstream=$(json_get "$work/relay.json" upstream_url)
proxy=$(json_get "$work/relay.json" proxy)
control=$(json_get "$work/relay.json" control)

# Agent "small" serves its own webhook; agent "bulk" forwards to the origin.
start_agent() { # name port extra
	mkdir -p "$work/$1"
	cat >"$work/$1/config.yaml" <<EOC
agent:
  id: $1
  state_dir: $work/$1/state
webhook:
  listen_addr: 127.0.0.1
  port: $2
log:
  level: warn
piko:
  server_url: $upstream
  endpoint: $1
  max_streams: 2048
$3
EOC
	"$VM_AGENT_BIN" run --config "$work/$1/config.yaml" >"$work/$1/log" 2>&1 &
	pids="$pids $!"
	eval "pid_$1=$!"
}
port_small=$(free_port)
port_bulk=$(free_port)
start_agent small "$port_small" ""
start_agent bulk "$port_bulk" "  forward_addr: $origin"
# The same binary with the tunnel off: the baseline its RSS is compared with.
port_off=$(free_port)
start_agent off "$port_off" ""
sed -i '/^piko:/,$d' "$work/off/config.yaml"
kill "$pid_off"; wait "$pid_off" 2>/dev/null || true
"$VM_AGENT_BIN" run --config "$work/off/config.yaml" >"$work/off/log" 2>&1 &
pid_off=$!; pids="$pids $!"
i=0
until curl -fs "http://$control/status" | grep -q '"upstreams":2'; do
	i=$((i + 1)); [ $i -lt 500 ] || { echo "agents did not connect" >&2; cat "$work"/*/log >&2; exit 1; }
	sleep 0.02
done
sleep 1
idle_rss=$(rss_kb "$pid_small")
idle_anon=$(anon_kb "$pid_small")
off_rss=$(rss_kb "$pid_off")
off_anon=$(anon_kb "$pid_off")
kill "$pid_off"

lg="$work/loadgen"
set -- $("$lg" rps -url "http://127.0.0.1:$port_small/v1/livez" -c "$CONC" -d "${DUR}s")
d_rps=$1 d_p50=$2 d_p99=$3 d_err=$4
set -- $("$lg" rps -url "http://$proxy/v1/livez" -H "x-piko-endpoint: small" -c "$CONC" -d "${DUR}s")
t_rps=$1 t_p50=$2 t_p99=$3 t_err=$4
# The webhook (civetweb) answers slowly to direct loopback clients (Nagle and
# delayed ACKs, no TCP_NODELAY), so also compare on the Go origin's /small.
set -- $("$lg" rps -url "http://$origin/small" -c "$CONC" -d "${DUR}s")
do_rps=$1 do_p50=$2 do_p99=$3
set -- $("$lg" rps -url "http://$origin/small" -close -c "$CONC" -d "${DUR}s")
dc_rps=$1 dc_p50=$2 dc_p99=$3
set -- $("$lg" rps -url "http://$proxy/small" -H "x-piko-endpoint: bulk" -c "$CONC" -d "${DUR}s")
to_rps=$1 to_p50=$2 to_p99=$3
bytes=$((BULK_MB * 1048576))
d_mbs=$("$lg" bulk -url "http://$origin/bulk?n=$bytes" -n 3)
c0=$(cpu_ticks "$pid_bulk")
r0=$(cpu_ticks "$pid_relay")
t_mbs=$("$lg" bulk -url "http://$proxy/bulk?n=$bytes" -H "x-piko-endpoint: bulk" -n 3)

c1=$(cpu_ticks "$pid_bulk")
r1=$(cpu_ticks "$pid_relay")
hz=$(getconf CLK_TCK)
# 1,000 requests held open by the origin: 1,000 streams in the agent at once.
bulk_idle=$(rss_kb "$pid_bulk")
bulk_idle_anon=$(anon_kb "$pid_bulk")
"$lg" hold -url "http://$proxy/hold" -H "x-piko-endpoint: bulk" -n "$HOLD" >"$work/hold.out" &
hold_pid=$!
sleep 4
hold_rss=$(rss_kb "$pid_bulk")
hold_anon=$(anon_kb "$pid_bulk")
curl -fs "http://$origin/release" >/dev/null
wait "$hold_pid" || true
held_ok=$(cat "$work/hold.out")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.0f%%", 100 * a / b; else print "-" }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
printf '%-36s %14s %14s %8s   %s\n' "metric" "direct" "tunnel" "ratio" "target"
printf '%-36s %14s %14s %8s   %s\n' "webhook livez req/s (c=$CONC)" "$d_rps" "$t_rps" "$(ratio "$t_rps" "$d_rps")" ">= 50%"
printf '%-36s %14s %14s %8s\n' "webhook livez p50 ms" "$d_p50" "$t_p50" "$(ratio "$t_p50" "$d_p50")"
printf '%-36s %14s %14s %8s\n' "webhook livez p99 ms" "$d_p99" "$t_p99" "$(ratio "$t_p99" "$d_p99")"
printf '%-36s %14s %14s\n' "webhook livez errors" "$d_err" "$t_err"
printf '%-36s %14s %14s %8s   %s\n' "origin /small req/s" "$do_rps" "$to_rps" "$(ratio "$to_rps" "$do_rps")" ">= 50%"
printf '%-36s %14s %14s %8s\n' "origin /small p50 ms" "$do_p50" "$to_p50" "$(ratio "$to_p50" "$do_p50")"
printf '%-36s %14s %14s %8s\n' "origin /small p99 ms" "$do_p99" "$to_p99" "$(ratio "$to_p99" "$do_p99")"
# The tunnel opens a stream and a local TCP connection per request (Piko's
# model), so the like-for-like direct client also connects per request.
printf '%-36s %14s %14s %8s\n' "origin /small req/s, direct new conn" "$dc_rps" "$to_rps" "$(ratio "$to_rps" "$dc_rps")"
printf '%-36s %14s %14s %8s\n' "origin /small p50 ms, new conn" "$dc_p50" "$to_p50" "$(ratio "$to_p50" "$dc_p50")"
printf '%-36s %14s %14s %8s   %s\n' "${BULK_MB} MiB GET MB/s" "$d_mbs" "$t_mbs" "$(ratio "$t_mbs" "$d_mbs")" ">= 80%"
printf '%-36s %14s %14s\n' "agent CPU s per GB (bulk)" "" \
	"$(awk -v t=$((c1 - c0)) -v hz="$hz" -v mb="$BULK_MB" 'BEGIN { printf "%.2f", t / hz / (3 * mb * 1.048576 / 1000) }')"
printf '%-36s %14s %14s\n' "relay CPU s per GB (bulk)" "" \
	"$(awk -v t=$((r1 - r0)) -v hz="$hz" -v mb="$BULK_MB" 'BEGIN { printf "%.2f", t / hz / (3 * mb * 1.048576 / 1000) }')"
printf '%-36s %14s %14s %8s   %s\n' "agent VmRSS idle" "off: $(mib "$off_rss")" "$(mib "$idle_rss")" "" "<= 4 MiB"
printf '%-36s %14s %14s\n' "agent RssAnon idle" "off: $(mib "$off_anon")" "$(mib "$idle_anon")"
printf '%-36s %14s %14s %8s   %s\n' "agent VmRSS, $HOLD streams" "idle: $(mib "$bulk_idle")" "$(mib "$hold_rss")" "" "<= 32 MiB"
printf '%-36s %14s %14s\n' "agent RssAnon, $HOLD streams" "idle: $(mib "$bulk_idle_anon")" "$(mib "$hold_anon")"
printf '%-36s %14s %14s\n' "held requests answered" "" "$held_ok/$HOLD"
