#!/bin/sh
# Install the Debian packages vm-agent needs to build, run and test.
# Idempotent and quiet when everything is present; uses sudo when not root.
set -eu

PACKAGES="
  build-essential cmake pkg-config clang libclang-rt-14-dev llvm
  libssl-dev libcurl4-openssl-dev libyaml-dev libjansson-dev libcmocka-dev
  ca-certificates patch xz-utils debian-archive-keyring
  golang-go golang-github-hashicorp-yamux-dev golang-github-gorilla-websocket-dev
  minisign tinyproxy curl systemd
  podman runc busybox-static
  golang-github-prometheus-common-dev
  openssh-server openssh-client
  rsync
  haproxy iproute2 iptables valgrind
  debootstrap systemd-container dpkg-dev
  e2fsprogs
"
# `deps.sh --static [DIR]`: only what `make build-all` (scripts/build-static.sh)
# and the static-binary tests (`make test-static`) need on top of the above.
if [ "${1:-}" = "--static" ]; then
  PACKAGES="musl-tools busybox-static gcc-aarch64-linux-gnu linux-libc-dev-arm64-cross
    qemu-user-static"
  shift
fi

missing=""
for p in $PACKAGES; do
  st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  case "$st" in *"install ok installed"*) ;; *) missing="$missing $p" ;; esac
done

if [ -n "$missing" ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "deps: installing:$missing"
  export DEBIAN_FRONTEND=noninteractive
  # Packages that ship a service (openssh-server for the runner's e2e tests) must not
  # start it: a system sshd on port 22 is not ours to run. A policy-rc.d that answers
  # 101 keeps invoke-rc.d from starting anything; ours is removed afterwards.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  # A package that apt does not know yet usually means stale lists: refresh first.
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# civetweb is built from Debian's own source package (the packaged library's TLS
# does not work with OpenSSL 3); fetched once into the build tree.
"$(dirname "$0")/fetch-civetweb.sh" "${1:-build/third_party}"
