#!/bin/sh
# Build a fully static (musl) vm-agent: dist/vm-agent-linux-<arch> plus .sha256
# (and .minisig when SIGN_KEY names a minisign secret key file).
#
# OpenSSL, libcurl (HTTP(S), proxies, unix sockets only), jansson and libyaml
# are built from their Debian source packages (fetched with a private apt
# state, like scripts/fetch-civetweb.sh; apt verifies the archive signature and
# the file hashes) into a prefix cached OUTSIDE the build tree:
#   ${XDG_CACHE_HOME:-$HOME/.cache}/vm-agent/static-<arch>-<key>
# where <key> hashes the source package versions, the musl version and
# DEPS_REV (below), so a second build only compiles vm-agent itself. civetweb comes from
# the build tree (scripts/fetch-civetweb.sh) and is compiled by CMake as usual.
#
# usage: scripts/build-static.sh [amd64]     (arm64: not yet, see docs/static-builds.md)
# env:   DIST (default dist), STATIC_BUILD (default build-static-<arch>),
#        JOBS, SIGN_KEY, VMA_STATIC_CACHE (override the cache root)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
arch=${1:-amd64}
jobs=${JOBS:-$(nproc 2>/dev/null || echo 2)}
dist=${DIST:-$root/dist}
bdir=${STATIC_BUILD:-$root/build-static-$arch}
third=$root/build/third_party
cache_root=${VMA_STATIC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vm-agent}

case "$arch" in
amd64) triplet=x86_64-linux-musl; ossl_target=linux-x86_64; cc=musl-gcc
	kinc=/usr/include/x86_64-linux-gnu ;;
*) echo "build-static: architecture '$arch' is not supported yet (amd64 only;" \
	"docs/static-builds.md says what arm64 needs)" >&2; exit 2 ;;
esac
command -v "$cc" >/dev/null || { echo "build-static: $cc missing: run scripts/deps.sh --static" >&2; exit 1; }
[ -f "$third/civetweb/src/civetweb.c" ] || "$here/fetch-civetweb.sh" "$third"

log() { echo "build-static: $*" >&2; }
t0=$(date +%s)

# --- the source package versions: a private apt state kept in the cache --------
apt_dir=$cache_root/apt
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
"$here/apt-deb-src.sh" > "$apt_dir/sources.list"
apt_opts="-o Dir::Etc::SourceList=$apt_dir/sources.list -o Dir::Etc::SourceParts=/dev/null \
  -o Dir::State::Lists=$apt_dir/lists -o Dir::Cache=$apt_dir/cache -o Debug::NoLocking=1 \
  -o APT::Sandbox::User=root"
# shellcheck disable=SC2086
apt-get -qq $apt_opts update
srcpkgs="openssl curl jansson libyaml"
versions=""
for p in $srcpkgs; do
	# shellcheck disable=SC2086
	# every version the archives offer, newest first (fetch() takes the newest it can download)
	v=$(apt-cache $apt_opts showsrc "$p" | awk '/^Version:/ {print $2}' | sort -Vru | tr '\n' ',')
	[ -n "$v" ] || { log "no source package '$p' in $apt_dir/sources.list"; exit 1; }
	versions="$versions $p=${v%,}"
done
musl_v=$(dpkg-query -W -f='${Version}' musl-dev)
# Bump DEPS_REV when the way the dependencies are built below changes.
DEPS_REV=1
key=$(printf '%s musl=%s rev=%s\n' "$versions" "$musl_v" "$DEPS_REV" | sha256sum | cut -c1-16)
prefix=$cache_root/static-$arch-$key
log "dependency cache: $prefix"

# --- the dependencies, once per key ---------------------------------------------
# fetch PKG=V1,V2,… into $work/src/<pkg>, Debian patches applied (dpkg-source): the
# newest version whose files the archive serves (a mirror may index a security
# update before it carries its files).
fetch() {
	p=${1%%=*}
	for v in $(echo "${1#*=}" | tr ',' ' '); do
		rm -rf "$work/dl-$p" && mkdir -p "$work/dl-$p"
		# shellcheck disable=SC2086
		if (cd "$work/dl-$p" && apt-get -qq $apt_opts source "$p=$v" >/dev/null 2>&1); then
			d=$(find "$work/dl-$p" -mindepth 1 -maxdepth 1 -type d | head -n1)
			mv "$d" "$work/src/$p"
			rm -rf "$work/dl-$p"
			built="$built $p=$v"
			return 0
		fi
		log "$p $v: not downloadable, trying an older version"
	done
	log "no version of source package $p could be downloaded"; exit 1
}

build_openssl() {
	cd "$work/src/openssl"
	./Configure "$ossl_target" no-shared no-tests no-dso no-engine no-afalgeng no-ui-console \
		--prefix="$prefix" --libdir=lib --openssldir=/etc/ssl
	make -j"$jobs" build_libs
	make install_dev
}

# libcurl with what the agent uses: HTTP(S), proxies, unix sockets.
build_curl() {
	cd "$work/src/curl"
	./configure --host="$triplet" --prefix="$prefix" --disable-shared --enable-static \
		--with-openssl="$prefix" --with-ca-bundle=/etc/ssl/certs/ca-certificates.crt \
		--with-ca-path=/etc/ssl/certs --enable-http --enable-proxy --enable-unix-sockets \
		--enable-ipv6 --disable-ftp --disable-file --disable-ldap --disable-ldaps --disable-rtsp \
		--disable-dict --disable-telnet --disable-tftp --disable-pop3 --disable-imap --disable-smb \
		--disable-smtp --disable-gopher --disable-mqtt --disable-manual --disable-docs \
		--disable-alt-svc --disable-hsts --disable-netrc --disable-ntlm --disable-kerberos-auth \
		--disable-negotiate-auth --disable-aws --without-zlib --without-brotli --without-zstd \
		--without-libpsl --without-libidn2 --without-nghttp2 --without-libssh2 --without-librtmp \
		--without-gssapi
	make -j"$jobs" -C lib
	make -C lib install
	make -C include install
	make install-pkgconfigDATA
}

# jansson and libyaml: their own CMake builds (the source packages carry no
# generated configure script).
build_cmake() {
	cmake -S "$work/src/$1" -B "$work/src/$1/_b" -DCMAKE_C_COMPILER="$(command -v "$cc")" \
		-DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$prefix" -DCMAKE_INSTALL_LIBDIR=lib \
		-DCMAKE_POSITION_INDEPENDENT_CODE=ON -DBUILD_SHARED_LIBS=OFF "$@"
	cmake --build "$work/src/$1/_b" -j "$jobs"
	cmake --install "$work/src/$1/_b"
}
build_jansson() { build_cmake jansson -DJANSSON_BUILD_DOCS=OFF -DJANSSON_EXAMPLES=OFF -DJANSSON_WITHOUT_TESTS=ON; }
build_libyaml() {
	build_cmake libyaml -DBUILD_TESTING=OFF -DINSTALL_CMAKE_DIR=lib/cmake/yaml
	# its CMake build installs no pkg-config file; vm-agent's CMakeLists looks for one
	v=$(dpkg-parsechangelog -l "$work/src/libyaml/debian/changelog" -S Version | sed 's/-[^-]*$//')
	# shellcheck disable=SC2016 # ${prefix} and ${libdir} are pkg-config variables
	printf 'prefix=%s\nlibdir=${prefix}/lib\nincludedir=${prefix}/include\n\nName: LibYAML\nDescription: Library to parse and emit YAML\nVersion: %s\nLibs: -L${libdir} -lyaml\nCflags: -I${includedir}\n' \
		"$prefix" "$v" > "$prefix/lib/pkgconfig/yaml-0.1.pc"
}

# Each dependency is built once (a stamp in the prefix), so an interrupted first
# build resumes where it stopped.
if [ ! -f "$prefix/.done" ]; then
	work=$cache_root/work-$arch-$key
	mkdir -p "$work/src" "$prefix/include"
	# musl's headers plus the kernel's UAPI headers (linux/, asm/, asm-generic/).
	for d in linux asm-generic; do ln -sfn "/usr/include/$d" "$prefix/include/$d"; done
	ln -sfn "$kinc/asm" "$prefix/include/asm"
	export CC="$cc" CFLAGS="-O2 -fPIC -isystem $prefix/include" PKG_CONFIG_LIBDIR="$prefix/lib/pkgconfig"
	built=""
	for pv in $versions; do
		p=${pv%%=*}
		if [ -f "$prefix/.$p.done" ]; then built="$built $(cat "$prefix/.$p.done")"; continue; fi
		rm -rf "$work/src/$p"
		fetch "$pv"
		log "$p"
		("build_$p") > "$work/$p.log" 2>&1 || { log "$p failed: $work/$p.log"; exit 1; }
		echo "${built##* }" > "$prefix/.$p.done"
		rm -rf "$work/src/$p"
	done
	rm -rf "$work"
	printf "%s musl=%s\n" "$built" "$musl_v" > "$prefix/.done"
	log "dependencies built in $(($(date +%s) - t0)) s"
fi
log "dependencies:$(cat "$prefix/.done")"

# --- vm-agent itself ------------------------------------------------------------
t1=$(date +%s)
export PKG_CONFIG_LIBDIR="$prefix/lib/pkgconfig" PKG_CONFIG_PATH=""
cmake -S "$root" -B "$bdir" -DCMAKE_C_COMPILER="$(command -v "$cc")" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	-DVMA_TESTS=OFF -DCIVETWEB_DIR="$third/civetweb" -DCMAKE_PREFIX_PATH="$prefix" \
	-DCMAKE_FIND_ROOT_PATH="$prefix" -DCMAKE_FIND_ROOT_PATH_MODE_LIBRARY=ONLY \
	-DCMAKE_FIND_ROOT_PATH_MODE_INCLUDE=ONLY -DCMAKE_FIND_ROOT_PATH_MODE_PACKAGE=ONLY \
	-DOPENSSL_ROOT_DIR="$prefix" -DOPENSSL_USE_STATIC_LIBS=ON \
	-DCURL_INCLUDE_DIR="$prefix/include" -DCURL_LIBRARY="$prefix/lib/libcurl.a" \
	-DCMAKE_C_FLAGS="-isystem $prefix/include" -DCMAKE_EXE_LINKER_FLAGS="-static" >/dev/null
cmake --build "$bdir" -j "$jobs" --target vm-agent
out=$dist/vm-agent-linux-$arch
mkdir -p "$dist"
cp "$bdir/vm-agent" "$out.tmp"
strip "$out.tmp"
mv "$out.tmp" "$out"
if readelf -lW "$out" | grep -q 'INTERP\|DYNAMIC'; then log "$out is dynamically linked"; exit 1; fi
"$here/dist-sign.sh" "$out"
log "$out ($(stat -c %s "$out") bytes), vm-agent in $(($(date +%s) - t1)) s, total $(($(date +%s) - t0)) s"
