#!/bin/sh
# make docker-build VERSION=V: OCI images FROM scratch, one per architecture
# (ARCHS, default "amd64 arm64"), each holding only the static agent
# (dist/vm-agent-linux-<arch>, built by scripts/build-static.sh when missing)
# and a CA bundle, entrypoint `vm-agent run`, labelled with V; saved as
# dist/vm-agent-V-<arch>.oci.tar (oci-archive), plus dist/vm-agent-V.oci.tar,
# a multi-architecture index of all of them (what a registry serves under one
# tag), each with its .sha256 (and .minisig when SIGN_KEY is given,
# scripts/dist-sign.sh). Built with buildah (Debian package, installed here
# when missing) in vfs storage with chroot isolation, so it needs no overlay
# driver, user namespaces or emulator (docs/static-builds.md).
# Env: DIST (default ./dist), VERSION (required), ARCHS, JOBS, SIGN_KEY.
set -eu
cd "$(dirname "$0")/.."
: "${VERSION:?VERSION=... is required}"
case "$VERSION" in
*[!0-9A-Za-z._+-]* | "") echo "docker-build: bad VERSION '$VERSION'" >&2; exit 64 ;;
esac
ARCHS=${ARCHS:-amd64 arm64}
for a in $ARCHS; do
	case "$a" in
	amd64 | arm64) ;;
	*) echo "docker-build: unknown arch '$a' (amd64, arm64)" >&2; exit 64 ;;
	esac
done
DIST=${DIST:-$PWD/dist}
ca=/etc/ssl/certs/ca-certificates.crt

need=""
command -v buildah >/dev/null 2>&1 || need="$need buildah"
[ -f "$ca" ] || need="$need ca-certificates"
if [ -n "$need" ]; then
	# shellcheck disable=SC2086 # package names, one word each
	apt-get install -y $need || { apt-get update && apt-get install -y $need; }
fi

# A private storage (removed at exit): nothing is left in /var/lib/containers.
store=$(mktemp -d "${TMPDIR:-/tmp}/vm-agent-buildah.XXXXXX")
b="buildah --root $store/storage --runroot $store/run --storage-driver vfs"
export BUILDAH_ISOLATION=chroot
ctr=""
trap '[ -z "$ctr" ] || $b rm "$ctr" >/dev/null 2>&1; rm -rf "$store"' EXIT
list=localhost/vm-agent-index:$VERSION
$b manifest create "$list" >/dev/null
for a in $ARCHS; do
	bin=$DIST/vm-agent-linux-$a
	out=$DIST/vm-agent-$VERSION-$a.oci.tar
	[ -f "$bin" ] || DIST=$DIST scripts/build-static.sh "$a"
	# A scratch image has no loader: refuse a dynamically linked binary.
	if head -c 4096 "$bin" | grep -aq -e '/lib64/ld-' -e '/lib/ld-'; then
		echo "docker-build: $bin names a dynamic loader: not the static build" >&2
		exit 1
	fi
	ctr=$($b from --pull=never --arch "$a" scratch)
	$b copy --chmod 0755 "$ctr" "$bin" /usr/local/bin/vm-agent
	$b copy --chmod 0644 "$ctr" "$ca" /etc/ssl/certs/ca-certificates.crt
	$b config --entrypoint '["/usr/local/bin/vm-agent","run"]' --cmd '' \
		--env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
		--label org.opencontainers.image.version="$VERSION" \
		--label org.opencontainers.image.title=vm-agent \
		--os linux --arch "$a" "$ctr"
	$b commit --format oci "$ctr" "localhost/vm-agent:$VERSION-$a" >/dev/null
	$b rm "$ctr" >/dev/null
	ctr=""
	rm -f "$out"
	$b push "localhost/vm-agent:$VERSION-$a" "oci-archive:$out:vm-agent:$VERSION"
	$b manifest add --arch "$a" --os linux "$list" "containers-storage:localhost/vm-agent:$VERSION-$a" >/dev/null
	scripts/dist-sign.sh "$out"
	ls -l "$out" "$out.sha256"
done
out=$DIST/vm-agent-$VERSION.oci.tar
rm -f "$out"
$b manifest push --all --format oci "$list" "oci-archive:$out:vm-agent:$VERSION"
scripts/dist-sign.sh "$out"
ls -l "$out" "$out.sha256"
