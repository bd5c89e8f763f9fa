#!/bin/sh
# scripts/apt-mirror.sh takes the archive from the system's apt sources only:
# deb822 URIs: and one-line deb entries, security archives and disabled or
# deb-src-only entries skipped, and a clear failure (no fallback host) when
# nothing is configured. Runs against fake /etc/apt trees.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tool="$here/../../scripts/apt-mirror.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0

# expect NAME WANT: the tool, run on $tmp/NAME, prints WANT and exits 0
expect() {
	got=$(APT_ETC="$tmp/$1" sh "$tool" 2>"$tmp/err") || { echo "FAIL $1: exit $? ($(cat "$tmp/err"))"; fails=$((fails + 1)); return; }
	[ "$got" = "$2" ] || { echo "FAIL $1: got '$got', want '$2'"; fails=$((fails + 1)); return; }
	echo "ok   $1"
}

mkdir -p "$tmp/deb822/sources.list.d"
cat > "$tmp/deb822/sources.list.d/debian.sources" <<'S'
Types: deb
# a comment naming http://other.invalid/debian
URIs: http://security.mirror.invalid/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://src-only.invalid/debian
Suites: bookworm

Types: deb
URIs: http://disabled.invalid/debian
Suites: bookworm
Enabled: no

Types: deb deb-src
URIs: http://archive.invalid/debian http://second.invalid/debian
Suites: bookworm bookworm-updates
Components: main
S
expect deb822 http://archive.invalid/debian

mkdir -p "$tmp/oneline/sources.list.d"
cat > "$tmp/oneline/sources.list" <<'S'
# deb http://commented.invalid/debian bookworm main
deb-src http://src.invalid/debian bookworm main
deb http://sec.invalid/debian-security bookworm-security main
deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] https://line.invalid/debian bookworm main
S
expect oneline https://line.invalid/debian

mkdir -p "$tmp/none/sources.list.d"
echo "# nothing" > "$tmp/none/sources.list"
if APT_ETC="$tmp/none" sh "$tool" >"$tmp/out" 2>"$tmp/err"; then
	echo "FAIL none: succeeded with '$(cat "$tmp/out")'"; fails=$((fails + 1))
elif ! grep -q 'no Debian archive' "$tmp/err" || [ -s "$tmp/out" ]; then
	echo "FAIL none: unclear failure: '$(cat "$tmp/err")' out '$(cat "$tmp/out")'"; fails=$((fails + 1))
else
	echo "ok   none"
fi

# the repository names no mirror or registry host at all
if git -C "$here/../.." grep -n -E 'deb\.debian\.org|ftp\.[a-z]+\.debian|archive\.ubuntu\.com|snapshot\.debian' -- . >"$tmp/hosts" 2>/dev/null; then
	echo "FAIL hosts: the tree names a mirror host:"; cat "$tmp/hosts"; fails=$((fails + 1))
else
	echo "ok   hosts"
fi
[ "$fails" -eq 0 ]
