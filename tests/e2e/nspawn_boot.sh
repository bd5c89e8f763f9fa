#!/bin/sh
# A real boot test, NOT run by `make test`: builds a Debian minbase tree with
# debootstrap, boots it with systemd-nspawn (private network), then runs
# install → status → upgrade → uninstall against the real systemd inside.
# Needs root, debootstrap, systemd-container and a Debian mirror in the
# system's apt sources (scripts/apt-mirror.sh); the fake
# control plane and the release files are served from inside the container.
# Passed on 2026-11-25 (Debian 12 host, bookworm minbase guest): about 30 s
# after a 1.5 min debootstrap (the tree is reused when WORK_DIR is given).
#
# usage: tests/e2e/nspawn_boot.sh BUILD_DIR [WORK_DIR]
set -eu
build=$(cd "${1:?usage: $0 BUILD_DIR [WORK_DIR]}" && pwd)
work=${2:-$(mktemp -d /var/tmp/vma-nspawn.XXXXXX)}
root=$work/root
pid=""

cleanup() {
	if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
}
trap cleanup EXIT

[ "$(id -u)" -eq 0 ] || { echo "needs root" >&2; exit 2; }
for t in debootstrap systemd-nspawn nsenter minisign go; do
	command -v "$t" >/dev/null || { echo "needs $t" >&2; exit 2; }
done
# the archive this machine's apt uses (no built-in host); fails when none
mirror=$("$(dirname "$0")/../../scripts/apt-mirror.sh") || exit 2

if [ ! -x "$root/lib/systemd/systemd" ]; then
	debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,ca-certificates,libcurl4,libjansson4,libyaml-0-2,libssl3,procps \
		bookworm "$root" "$mirror"
fi

# What the test needs inside: the binaries, a fake control plane, a release.
mkdir -p "$root/opt/t"
cp "$build/vm-agent" "$root/opt/t/vm-agent"
cp "$build/upgrade-fixtures/vm-agent-v99.0.0" "$root/opt/t/vm-agent-99"
cp "$build/upgrade-fixtures/upgrade-stub-flaky" "$root/opt/t/flaky"
(cd "$(dirname "$0")/../fakecp" && CGO_ENABLED=0 GO111MODULE=off go build -o "$root/opt/t/fakecp" .)
rm -f "$work/k.pub" "$work/k.sec"
minisign -G -W -p "$work/k.pub" -s "$work/k.sec" >/dev/null
minisign -S -s "$work/k.sec" -m "$root/opt/t/vm-agent-99" >/dev/null
minisign -S -s "$work/k.sec" -m "$root/opt/t/flaky" >/dev/null
pub=$(tail -1 "$work/k.pub")
sum=$(sha256sum "$root/opt/t/vm-agent-99" | cut -d' ' -f1)
flaky_sum=$(sha256sum "$root/opt/t/flaky" | cut -d' ' -f1)

systemd-nspawn -D "$root" -b --register=no --keep-unit --private-network \
	--console=pipe >"$work/boot.log" 2>&1 &
pid=$!
# the container's init is the first child of systemd-nspawn
inner=""
for _ in $(seq 1 100); do
	inner=$(pgrep -P "$pid" | head -1 || true)
	[ -n "$inner" ] && nsenter -t "$inner" -a systemctl is-system-running --wait >/dev/null 2>&1 && break
	sleep 0.2
done
[ -n "$inner" ] || { cat "$work/boot.log"; echo "container did not boot" >&2; exit 1; }
ctr() { nsenter -t "$inner" -a "$@"; }

ctr sh -c '/opt/t/fakecp -addr-file /run/cp.addr >/run/cp.log 2>&1 &'
for _ in $(seq 1 50); do ctr test -s /run/cp.addr && break; sleep 0.1; done
cp="http://$(ctr cat /run/cp.addr)"

echo "== install"
ctr /opt/t/vm-agent install --tenant-id t1 --key ik-nspawn --piko-url "$cp" \
	--control-plane-url "$cp" --health-timeout 30
ctr systemctl is-active vm-agent.service
echo "== status"
ctr /usr/local/bin/vm-agent status || true
echo "== configure"
ctr /usr/local/bin/vm-agent configure --set "upgrade.public_keys=$pub"
echo "== upgrade"
ctr /usr/local/bin/vm-agent upgrade --version 99.0.0 --url file:///opt/t/vm-agent-99 \
	--checksum "sha256:$sum" --health-timeout 60
ctr /usr/local/bin/vm-agent version | grep -q 99.0.0
ctr systemctl is-active vm-agent.service
echo "== upgrade whose new binary cannot run as a service: rolled back"
# (the flaky stub passes the self-test, then exits 1 when systemd starts it)
if ctr /usr/local/bin/vm-agent upgrade --version 99.0.0 --url file:///opt/t/flaky \
	--checksum "sha256:$flaky_sum" --health-timeout 15; then
	echo "the broken upgrade succeeded" >&2; exit 1
fi
ctr /usr/local/bin/vm-agent version | grep -q 99.0.0
ctr systemctl is-active vm-agent.service
echo "== uninstall"
ctr /usr/local/bin/vm-agent uninstall --purge
! ctr test -e /usr/local/bin/vm-agent
! ctr test -e /etc/systemd/system/vm-agent.service
echo "nspawn boot test: OK"
