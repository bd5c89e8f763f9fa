#!/bin/sh
# scripts/apt-deb-src.sh turns every enabled "deb" entry of the system's apt
# sources (deb822 and one-line, security archives included) into deb-src lines
# for scripts/build-static.sh; disabled and deb-src-only entries are skipped,
# Signed-By is kept, and it fails clearly (no fallback host) when nothing is
# configured. Runs against fake /etc/apt trees.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tool="$here/../../scripts/apt-deb-src.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
kr=/usr/share/keyrings/debian-archive-keyring.gpg

# expect NAME: the tool, run on $tmp/NAME, prints $tmp/NAME.want and exits 0
expect() {
	got=$(APT_ETC="$tmp/$1" sh "$tool" 2>"$tmp/err") || { echo "FAIL $1: exit $? ($(cat "$tmp/err"))"; fails=$((fails + 1)); return; }
	[ "$got" = "$(cat "$tmp/$1.want")" ] || { printf 'FAIL %s: got\n%s\nwant\n%s\n' "$1" "$got" "$(cat "$tmp/$1.want")"; fails=$((fails + 1)); return; }
	echo "ok   $1"
}

mkdir -p "$tmp/deb822/sources.list.d"
cat > "$tmp/deb822/sources.list.d/debian.sources" <<'S'
Types: deb
# a comment naming http://other.invalid/debian
URIs: http://security.mirror.invalid/debian-security
Suites: bookworm-security
Components: main
Signed-By: /etc/apt/keyrings/sec.gpg

Types: deb-src
URIs: http://src-only.invalid/debian
Suites: bookworm
Components: main

Types: deb
URIs: http://disabled.invalid/debian
Suites: bookworm
Components: main
Enabled: no

Types: deb deb-src
URIs: http://archive.invalid/debian http://second.invalid/debian
Suites: bookworm bookworm-updates
Components: main contrib
S
cat > "$tmp/deb822.want" <<S
deb-src [signed-by=/etc/apt/keyrings/sec.gpg] http://security.mirror.invalid/debian-security bookworm-security main
deb-src [signed-by=$kr] http://archive.invalid/debian bookworm main contrib
deb-src [signed-by=$kr] http://archive.invalid/debian bookworm-updates main contrib
deb-src [signed-by=$kr] http://second.invalid/debian bookworm main contrib
deb-src [signed-by=$kr] http://second.invalid/debian bookworm-updates main contrib
S
expect deb822

mkdir -p "$tmp/oneline/sources.list.d"
cat > "$tmp/oneline/sources.list" <<'S'
# deb http://commented.invalid/debian bookworm main
deb-src http://src.invalid/debian bookworm main
deb http://sec.invalid/debian-security bookworm-security main
deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] https://line.invalid/debian bookworm main
S
cat > "$tmp/oneline.want" <<S
deb-src [signed-by=$kr] http://sec.invalid/debian-security bookworm-security main
deb-src [signed-by=/usr/share/keyrings/k.gpg] https://line.invalid/debian bookworm main
S
expect oneline

mkdir -p "$tmp/none/sources.list.d"
echo "# nothing" > "$tmp/none/sources.list"
if APT_ETC="$tmp/none" sh "$tool" >"$tmp/out" 2>"$tmp/err"; then
	echo "FAIL none: succeeded with '$(cat "$tmp/out")'"; fails=$((fails + 1))
elif ! grep -q 'no Debian archive' "$tmp/err" || [ -s "$tmp/out" ]; then
	echo "FAIL none: unclear failure: '$(cat "$tmp/err")' out '$(cat "$tmp/out")'"; fails=$((fails + 1))
else
	echo "ok   none"
fi
[ "$fails" -eq 0 ]
