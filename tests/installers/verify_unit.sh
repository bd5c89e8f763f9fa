#!/bin/sh
# ctest: installers/vm-agent.service, with @BIN@ replaced by the built binary
# (exactly what `vm-agent install` writes, for another path), must pass
# `systemd-analyze verify` without errors or warnings (some mistakes only warn).
# Usage: verify_unit.sh UNIT_TEMPLATE BINARY
set -eu
template=$1
bin=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
sed "s|@BIN@|$bin|g" "$template" > "$dir/vm-agent.service"
if ! systemd-analyze verify "$dir/vm-agent.service" > "$dir/out" 2>&1; then
	cat "$dir/out"
	echo "FAIL: systemd-analyze verify exited non-zero"
	exit 1
fi
if grep -q . "$dir/out"; then
	cat "$dir/out"
	echo "FAIL: systemd-analyze verify printed warnings"
	exit 1
fi
# Steps run in cgroups below the agent's own (memory/cpu/pids limits,
# cgroup.kill): systemd must delegate that subtree to the agent.
if ! grep -qx 'Delegate=yes' "$template"; then
	echo "FAIL: vm-agent.service lacks Delegate=yes (step cgroups need a delegated subtree)"
	exit 1
fi
echo "OK: vm-agent.service passes systemd-analyze verify"
