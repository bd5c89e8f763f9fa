#!/bin/sh
# Runs every benchmark (tests/bench/bench_*.sh) against the binary in
# $BUILD_DIR. Each prints its own table with a reference measured in the same
# run, so the ratios mean something on whatever machine runs them.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
: "${BUILD_DIR:?set BUILD_DIR to a build directory containing vm-agent}"
export BUILD_DIR VM_AGENT_BIN="$BUILD_DIR/vm-agent"
found=0
for b in "$here"/bench_*.sh; do
  [ -e "$b" ] || continue
  found=1
  echo "== $(basename "$b" .sh)"
  sh "$b"
  echo
done
[ "$found" -eq 1 ] || echo "no benchmarks yet"
