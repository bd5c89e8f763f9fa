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
# arm64 is cross-built: Debian has the cross gcc (gcc-aarch64-linux-gnu) but no
# aarch64 musl, so musl itself is built from its Debian source package with the
# cross compiler into the same cached prefix, with its gcc wrapper
# (<prefix>/bin/musl-gcc + specs) that everything else is compiled with.
#
# usage: scripts/build-static.sh [--cc clang] [amd64|arm64]
#   --cc clang: vm-agent itself is compiled with clang --target=<musl triplet>
#   (-Werror as always, ld.lld) against the same cached, gcc-built dependencies,
#   in build-static-<arch>-clang/; dist/ is not touched (the release is gcc's).
# env:   DIST (default dist), STATIC_BUILD (default build-static-<arch>),
#        JOBS, SIGN_KEY, VMA_STATIC_CACHE (override the cache root)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
use_clang=""
if [ "${1:-}" = "--cc" ]; then
	[ "${2:-}" = clang ] || { echo "build-static: --cc takes 'clang'" >&2; exit 2; }
	use_clang=1; shift 2
fi
arch=${1:-amd64}
jobs=${JOBS:-$(nproc 2>/dev/null || echo 2)}
dist=${DIST:-$root/dist}
bdir=${STATIC_BUILD:-$root/build-static-$arch${use_clang:+-clang}}
third=$root/build/third_party
cache_root=${VMA_STATIC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vm-agent}

# triplet: musl's; cross: the Debian cross toolchain's prefix ("" = native);
# kinc: where the kernel UAPI headers' asm/ is; cc: what everything is compiled with.
case "$arch" in
amd64) triplet=x86_64-linux-musl; ossl_target=linux-x86_64; cross=""; cproc=x86_64
	kinc=/usr/include/x86_64-linux-gnu; kuapi=/usr/include; tool=musl-gcc ;;
arm64) triplet=aarch64-linux-musl; ossl_target=linux-aarch64; cross=aarch64-linux-gnu-
	cproc=aarch64; kinc=/usr/aarch64-linux-gnu/include; kuapi=$kinc; tool=${cross}gcc ;;
*) echo "build-static: architecture '$arch' is not supported (amd64, arm64)" >&2; exit 2 ;;
esac
command -v "$tool" >/dev/null || { echo "build-static: $tool missing: run scripts/deps.sh --static" >&2; exit 1; }
[ -f "$third/civetweb/src/civetweb.c" ] || "$here/fetch-civetweb.sh" "$third"

log() { echo "build-static: $*" >&2; }
t0=$(date +%s)

# One build at a time per cache: the private apt state and the dependency
# prefixes below are shared by every checkout on the machine (two worktrees, or
# CI's clean clone next to a developer's `make build-all`).
mkdir -p "$cache_root"
exec 9>"$cache_root/lock"
flock -n 9 || { log "waiting for another build using $cache_root"; flock 9; }

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
[ -z "$cross" ] || srcpkgs="musl $srcpkgs"   # built first: the others use its wrapper
versions=""
for p in $srcpkgs; do
	# shellcheck disable=SC2086
	# every version the archives offer, newest first (fetch() takes the newest it can download)
	v=$(apt-cache $apt_opts showsrc "$p" | awk '/^Version:/ {print $2}' | sort -Vru | tr '\n' ',')
	[ -n "$v" ] || { log "no source package '$p' in $apt_dir/sources.list"; exit 1; }
	versions="$versions $p=${v%,}"
done
if [ -z "$cross" ]; then musl_v=$(dpkg-query -W -f='${Version}' musl-dev)
else musl_v="source,$(dpkg-query -W -f='${Version}' "gcc-${cross%-}")"; fi
# Bump DEPS_REV when the way the dependencies are built below changes.
DEPS_REV=2
key=$(printf '%s musl=%s rev=%s\n' "$versions" "$musl_v" "$DEPS_REV" | sha256sum | cut -c1-16)
prefix=$cache_root/static-$arch-$key
log "dependency cache: $prefix"
if [ -z "$cross" ]; then cc=$(command -v musl-gcc); else cc=$prefix/bin/musl-gcc; fi
export AR="${cross}ar" RANLIB="${cross}ranlib" NM="${cross}nm" STRIP="${cross}strip"
# The CMake builds (jansson, libyaml, vm-agent) cross-compile through a toolchain file.
# write_toolchain FILE COMPILER-LINES: the target, the given compiler settings,
# the binutils, and the dependency prefix as the only root for libraries and headers.
write_toolchain() {
	{ [ -z "$cross" ] || printf 'set(CMAKE_SYSTEM_NAME Linux)\nset(CMAKE_SYSTEM_PROCESSOR %s)\n' "$cproc"
	printf '%s\n' "$2"
	cat <<TC
set(CMAKE_AR $(command -v "$AR"))
set(CMAKE_RANLIB $(command -v "$RANLIB"))
set(CMAKE_STRIP $(command -v "$STRIP"))
set(CMAKE_FIND_ROOT_PATH $prefix)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
TC
	} > "$1"
}
toolchain=$cache_root/toolchain-$arch-$key.cmake
mkdir -p "$cache_root"
write_toolchain "$toolchain" "set(CMAKE_C_COMPILER $cc)"

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

# musl for a cross target (the native one is Debian's musl-dev): libc.a, headers
# and the gcc wrapper + specs (musl-gcc) in the prefix.
build_musl() {
	cd "$work/src/musl"
	CC=$tool CROSS_COMPILE=$cross CFLAGS="-Os -ffunction-sections -fdata-sections" \
		./configure --target="$triplet" \
		--prefix="$prefix" --syslibdir="$prefix/lib" --disable-shared --enable-wrapper=gcc
	make -j"$jobs"
	make install
}

# What the agent uses of OpenSSL: TLS 1.2/1.3 (libcurl client, civetweb server),
# SHA-1/SHA-256/BLAKE2b, HMAC, RSA/ECDSA/Ed25519 verification, PEM. The rest
# is configured out (no-<alg>), which is most of the static binary's size saving.
ossl_no="no-des no-rc2 no-rc4 no-rc5 no-idea no-seed no-bf no-cast no-camellia no-aria no-sm2 \
	no-sm3 no-sm4 no-md4 no-mdc2 no-whirlpool no-rmd160 no-ts no-srp no-gost no-comp no-ssl3 \
	no-dtls no-srtp no-sctp no-scrypt no-cmp no-ocb no-siphash no-cms no-legacy"
build_openssl() {
	cd "$work/src/openssl"
	# shellcheck disable=SC2086
	./Configure "$ossl_target" no-shared no-tests no-dso no-engine no-afalgeng no-ui-console \
		$ossl_no --prefix="$prefix" --libdir=lib --openssldir=/etc/ssl
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
	cmake -S "$work/src/$1" -B "$work/src/$1/_b" -DCMAKE_TOOLCHAIN_FILE="$toolchain" \
		-DCMAKE_BUILD_TYPE=MinSizeRel -DCMAKE_INSTALL_PREFIX="$prefix" -DCMAKE_INSTALL_LIBDIR=lib \
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
	for d in linux asm-generic; do ln -sfn "$kuapi/$d" "$prefix/include/$d"; done
	ln -sfn "$kinc/asm" "$prefix/include/asm"
	# -Os and one section per function/object: vm-agent links with --gc-sections
	export CC="$cc" CFLAGS="-Os -fPIC -ffunction-sections -fdata-sections -isystem $prefix/include" \
		PKG_CONFIG_LIBDIR="$prefix/lib/pkgconfig"
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
if [ -n "$use_clang" ]; then
	# clang's Linux driver knows musl targets; give it a sysroot laid out the usual
	# way: usr/include (musl + kernel headers), usr/lib (crt*.o, libc.a) and the gcc
	# installation whose crtbegin/libgcc it links (found as usr/lib/gcc/<gnu triplet>).
	if [ -z "$cross" ]; then minc=/usr/include/x86_64-linux-musl; mlib=/usr/lib/x86_64-linux-musl
		gnu=x86_64-linux-gnu; gccdir=/usr/lib/gcc/$gnu
	else minc=$prefix/include; mlib=$prefix/lib; gnu=${cross%-}; gccdir=/usr/lib/gcc-cross/$gnu; fi
	sysroot=$cache_root/sysroot-$arch-$key
	rm -rf "$sysroot" && mkdir -p "$sysroot/usr/lib/gcc/$gnu"
	ln -s "$minc" "$sysroot/usr/include"
	ln -s "$(find "$gccdir" -mindepth 1 -maxdepth 1 -type d | sort -V | tail -n1)" "$sysroot/usr/lib/gcc/$gnu/"
	for f in "$mlib"/*.o "$mlib"/libc.a "$mlib"/libm.a "$mlib"/libpthread.a "$mlib"/librt.a "$mlib"/libdl.a; do
		[ ! -e "$f" ] || ln -s "$f" "$sysroot/usr/lib/"
	done
	toolchain=$cache_root/toolchain-$arch-$key-clang.cmake
	write_toolchain "$toolchain" "set(CMAKE_C_COMPILER $(command -v clang))
set(CMAKE_C_COMPILER_TARGET $triplet)
set(CMAKE_SYSROOT $sysroot)"
fi
export PKG_CONFIG_LIBDIR="$prefix/lib/pkgconfig" PKG_CONFIG_PATH=""
cmake -S "$root" -B "$bdir" -DCMAKE_TOOLCHAIN_FILE="$toolchain" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	-DVMA_TESTS=OFF -DCIVETWEB_DIR="$third/civetweb" -DCMAKE_PREFIX_PATH="$prefix" \
	-DOPENSSL_ROOT_DIR="$prefix" -DOPENSSL_USE_STATIC_LIBS=ON \
	-DCURL_INCLUDE_DIR="$prefix/include" -DCURL_LIBRARY="$prefix/lib/libcurl.a" \
	-DCMAKE_C_FLAGS="-isystem $prefix/include -ffunction-sections -fdata-sections" \
	-DCMAKE_EXE_LINKER_FLAGS="-static -Wl,--gc-sections${use_clang:+ -fuse-ld=lld}" >/dev/null
cmake --build "$bdir" -j "$jobs" --target vm-agent
if [ -n "$use_clang" ]; then
	if readelf -lW "$bdir/vm-agent" | grep -q 'INTERP\|DYNAMIC'; then log "$bdir/vm-agent is dynamically linked"; exit 1; fi
	log "clang: $bdir/vm-agent ($(readelf -h "$bdir/vm-agent" | awk '/Machine:/ {$1=""; print}'), static), in $(($(date +%s) - t1)) s"
	exit 0
fi
out=$dist/vm-agent-linux-$arch
mkdir -p "$dist"
cp "$bdir/vm-agent" "$out.tmp"
"$STRIP" "$out.tmp"
mv "$out.tmp" "$out"
if readelf -lW "$out" | grep -q 'INTERP\|DYNAMIC'; then log "$out is dynamically linked"; exit 1; fi
"$here/dist-sign.sh" "$out"
log "$out ($(stat -c %s "$out") bytes), vm-agent in $(($(date +%s) - t1)) s, total $(($(date +%s) - t0)) s"
