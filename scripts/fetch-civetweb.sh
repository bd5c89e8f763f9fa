#!/bin/sh
# Fetch Debian's own civetweb source package into $1 (default build/third_party),
# using a private apt state so the system's apt configuration is never touched.
# apt still verifies the archive signature and the file hashes.
set -eu
dest=${1:-build/third_party}
out="$dest/civetweb"
[ -f "$out/src/civetweb.c" ] && exit 0

mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
work="$dest/apt-civetweb"
rm -rf "$work" && mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/src"

# The archive comes from the system's own apt sources, never a built-in host.
mirror=$("$(dirname "$0")/apt-mirror.sh")
. /etc/os-release
suite=${VERSION_CODENAME:-bookworm}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
echo "deb-src [signed-by=$keyring] $mirror $suite main" > "$work/sources.list"

apt_opts="-o Dir::Etc::SourceList=$work/sources.list -o Dir::Etc::SourceParts=/dev/null \
  -o Dir::State::Lists=$work/lists -o Dir::Cache=$work/cache -o Debug::NoLocking=1 -o APT::Sandbox::User=root"
# shellcheck disable=SC2086
apt-get -qq $apt_opts update
# shellcheck disable=SC2086
(cd "$work/src" && apt-get -qq $apt_opts source --download-only civetweb >/dev/null)

tarball=$(ls "$work"/src/civetweb_*.orig.tar.* | head -n1)
rm -rf "$out.tmp" && mkdir -p "$out.tmp"
tar -xf "$tarball" -C "$out.tmp" --strip-components=1
# Debian's own patches, when present, are applied to match the packaged library.
debtar=$(ls "$work"/src/civetweb_*.debian.tar.* 2>/dev/null | head -n1 || true)
if [ -n "$debtar" ]; then
  tar -xf "$debtar" -C "$out.tmp"
  if [ -f "$out.tmp/debian/patches/series" ]; then
    for p in $(grep -v '^#' "$out.tmp/debian/patches/series"); do
      patch -s -d "$out.tmp" -p1 < "$out.tmp/debian/patches/$p"
    done
  fi
fi
rm -rf "$out" && mv "$out.tmp" "$out"
rm -rf "$work"
echo "civetweb source: $out"
