#!/bin/sh
# make fuzz-long: each libFuzzer target of $SAN_BUILD for $FUZZ_RUNS executions
# (capped at $FUZZ_LONG_SECONDS), on a scratch copy of its committed corpus;
# inputs that add coverage are merged back into tests/fuzz/corpus/<target>/.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=$SAN_BUILD/fuzz-long
mkdir -p "$out"
failed=""
for src in "$here"/fuzz_*.c; do
	name=$(basename "$src" .c)
	bin=$SAN_BUILD/tests/$name
	[ -x "$bin" ] || { echo "fuzz-long: $bin is not built" >&2; exit 2; }
	work=$out/$name
	rm -rf "$work" && mkdir -p "$work/corpus" "$here/corpus/$name"
	cp -r "$here/corpus/$name"/. "$work/corpus/" 2>/dev/null || true
	echo "fuzz-long: $name"
	if ! (cd "$work" && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		"$bin" -runs="$FUZZ_RUNS" -max_total_time="$FUZZ_LONG_SECONDS" -timeout=10 \
		-rss_limit_mb=2048 -print_final_stats=1 corpus >"$work/log" 2>&1); then
		echo "fuzz-long: $name FAILED (see $work/log and $work/crash-*)" >&2
		failed="$failed $name"
		continue
	fi
	grep -E 'stat::number_of_executed_units|stat::new_units_added' "$work/log" | sed "s/^/  /"
	"$bin" -merge=1 "$here/corpus/$name" "$work/corpus" >/dev/null 2>&1 || true
done
[ -z "$failed" ] || { echo "fuzz-long: failed:$failed" >&2; exit 1; }
