#!/bin/sh
# Static vs dynamic binary: idle VmRSS (and RssAnon) 3 s after `run` with the
# built-in defaults (webhook on a free loopback port, tunnel off, state in a
# temp dir), and the stripped file sizes, side by side with Piko's own agent
# (17 MiB VmRSS idle, docs/static-builds.md). The static binary is
# $VMA_STATIC_BIN or dist/vm-agent-linux-amd64 (`make build-all`).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
: "${VM_AGENT_BIN:?set VM_AGENT_BIN}"
static=${VMA_STATIC_BIN:-$root/dist/vm-agent-linux-amd64}
[ -x "$static" ] || { echo "bench_static: $static missing: run make build-all" >&2; exit 1; }

work=$(mktemp -d /tmp/vma-bench-static.XXXXXX)
pid=""
cleanup() { [ -z "$pid" ] || kill "$pid" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f MiB (%d kB)", k / 1024, k}'; }

# measure NAME BIN: prints "NAME rss_kb anon_kb stripped_bytes"
measure() {
	d=$work/$1 && mkdir -p "$d"
	cp "$2" "$d/bin"
	strip "$d/bin"
	(cd "$d" && exec env -i PATH=/usr/bin:/bin HOME="$d" XDG_STATE_HOME="$d/state" \
		VM_AGENT_WEBHOOK_PORT="$(free_port)" "$2" run >"$d/log" 2>&1) &
	pid=$!
	sleep 3
	kill -0 "$pid" 2>/dev/null || { echo "bench_static: $1 exited:" >&2; cat "$d/log" >&2; exit 1; }
	echo "$1 $(status_kb "$pid" VmRSS) $(status_kb "$pid" RssAnon) $(stat -c %s "$d/bin")"
	kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
}
dyn=$(measure dynamic "$VM_AGENT_BIN")
sta=$(measure static "$static")
printf '%-28s %22s %22s %16s\n' "binary" "VmRSS idle" "RssAnon" "stripped size"
for r in "$dyn" "$sta"; do
	# shellcheck disable=SC2086 # the fields of one row
	set -- $r
	printf '%-28s %22s %22s %16s\n' "$1" "$(mib "$2")" "$(mib "$3")" "$4 B"
done
printf '%-28s %22s %22s %16s\n' "Piko agent (docs)" "17.0 MiB" "-" "-"
# shellcheck disable=SC2086
set -- $sta
awk -v k="$2" -v s="$4" 'BEGIN {
	printf "static target <= 4 MiB VmRSS: %s; stripped <= 4 MiB: %s\n",
		(k <= 4096 ? "met" : "NOT met"), (s <= 4194304 ? "met" : "NOT met") }'
