#!/bin/sh
# make docker-build VERSION=V: an OCI image FROM scratch holding only the static
# amd64 agent (dist/vm-agent-linux-amd64, built by scripts/build-static.sh when
# missing) and a CA bundle, entrypoint `vm-agent run`, labelled with V; saved as
# dist/vm-agent-V-amd64.oci.tar (oci-archive) with its .sha256 (and .minisig
# when SIGN_KEY is given, scripts/dist-sign.sh). Built with buildah (Debian
# package, installed here when missing) in vfs storage with chroot isolation,
# so it needs no overlay driver or user namespaces (docs/static-builds.md).
# Env: DIST (default ./dist), VERSION (required), JOBS, SIGN_KEY.
set -eu
cd "$(dirname "$0")/.."
: "${VERSION:?VERSION=... is required}"
case "$VERSION" in
*[!0-9A-Za-z._+-]* | "") echo "docker-build: bad VERSION '$VERSION'" >&2; exit 64 ;;
esac
DIST=${DIST:-$PWD/dist}
bin=$DIST/vm-agent-linux-amd64
ca=/etc/ssl/certs/ca-certificates.crt
out=$DIST/vm-agent-$VERSION-amd64.oci.tar

need=""
command -v buildah >/dev/null 2>&1 || need="$need buildah"
[ -f "$ca" ] || need="$need ca-certificates"
if [ -n "$need" ]; then
	# shellcheck disable=SC2086 # package names, one word each
	apt-get install -y $need || { apt-get update && apt-get install -y $need; }
fi
[ -f "$bin" ] || DIST=$DIST scripts/build-static.sh amd64
# A scratch image has no loader: refuse a dynamically linked binary.
if head -c 4096 "$bin" | grep -aq -e '/lib64/ld-' -e '/lib/ld-'; then
	echo "docker-build: $bin names a dynamic loader: not the static build" >&2
	exit 1
fi

# A private storage (removed at exit): nothing is left in /var/lib/containers.
store=$(mktemp -d "${TMPDIR:-/tmp}/vm-agent-buildah.XXXXXX")
b="buildah --root $store/storage --runroot $store/run --storage-driver vfs"
export BUILDAH_ISOLATION=chroot
ctr=""
trap '[ -z "$ctr" ] || $b rm "$ctr" >/dev/null 2>&1; rm -rf "$store"' EXIT
ctr=$($b from --pull=never scratch)
$b copy --chmod 0755 "$ctr" "$bin" /usr/local/bin/vm-agent
$b copy --chmod 0644 "$ctr" "$ca" /etc/ssl/certs/ca-certificates.crt
$b config --entrypoint '["/usr/local/bin/vm-agent","run"]' --cmd '' \
	--env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
	--label org.opencontainers.image.version="$VERSION" \
	--label org.opencontainers.image.title=vm-agent \
	--os linux --arch amd64 "$ctr"
rm -f "$out"
$b commit --format oci "$ctr" "oci-archive:$out:vm-agent:$VERSION"
scripts/dist-sign.sh "$out"
ls -l "$out" "$out.sha256"
