#!/bin/sh
# One-line install of vm-agent:
#   curl -fsSL <base>/install.sh | sudo sh -s -- --tenant-id T --key K --piko-url U --control-plane-url C
#
# Detects the architecture, downloads vm-agent-linux-<arch>, its .sha256 and its
# .minisig from the base URL, verifies the sha256 AND the minisign signature
# against the public key pinned below, and only then runs
# `vm-agent install <the flags given to this script>`. Any mismatch: nothing is
# installed, the temporary directory is removed, the exit status is non-zero.
#
# The signature is checked with the `minisign` tool (package minisign). The
# downloaded binary's own verifier is NOT used: it is untrusted until verified.
#
# Base URL: $VMA_INSTALL_BASE_URL, or --base-url URL as the FIRST argument (for
# mirrors and tests); the default is the release URL below.
# The key: `make build-all SIGN_KEY=...` writes dist/install.sh with the public
# key of SIGN_KEY substituted; this committed copy holds a placeholder and
# refuses to run until a key is pinned.
set -eu

PUBKEY='@VMA_MINISIGN_PUBKEY@'
BASE_URL=${VMA_INSTALL_BASE_URL:-'@VMA_RELEASE_URL@'}

die() { echo "vm-agent install.sh: $*" >&2; exit 1; }

if [ "${1:-}" = "--base-url" ]; then
	[ $# -ge 2 ] || die "--base-url needs a URL"
	BASE_URL=$2
	shift 2
fi

case "$PUBKEY" in
@*) die "no signing public key is pinned in this script (use the dist/install.sh a release build writes)" ;;
esac
case "$BASE_URL" in
@*) die "no base URL: give --base-url URL or VMA_INSTALL_BASE_URL" ;;
https://* | http://127.0.0.1:* | http://127.0.0.1/* | http://localhost:*) ;;
*) die "base URL must be https:// (plain http only to 127.0.0.1/localhost): $BASE_URL" ;;
esac

case "$(uname -m)" in
x86_64 | amd64) arch=amd64 ;;
aarch64 | arm64) arch=arm64 ;;
*) die "unsupported architecture '$(uname -m)' (vm-agent is built for x86_64 and aarch64 only)" ;;
esac

command -v curl >/dev/null 2>&1 || die "curl is required"
command -v sha256sum >/dev/null 2>&1 || die "sha256sum is required"
command -v minisign >/dev/null 2>&1 ||
	die "minisign is required to verify the signature (e.g. apt-get install minisign; dnf install minisign)"
[ "$(id -u)" = 0 ] || die "must run as root (… | sudo sh -s -- FLAGS)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/vm-agent-install.XXXXXX") || die "mktemp failed"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM HUP
chmod 0700 "$tmp"

name=vm-agent-linux-$arch
for f in "$name" "$name.sha256" "$name.minisig"; do
	curl -fsS --proto '=https,http' -o "$tmp/$f" -- "${BASE_URL%/}/$f" ||
		die "download of ${BASE_URL%/}/$f failed (nothing installed)"
done

# The .sha256 is data, never sourced: its one line must be "<64 hex>  <name>".
want=$(head -c 200 "$tmp/$name.sha256" | awk 'NR==1 {print $1; exit}')
case "$want" in
*[!0-9a-f]* | "") die "$name.sha256 is malformed (nothing installed)" ;;
esac
[ ${#want} -eq 64 ] || die "$name.sha256 is malformed (nothing installed)"
got=$(sha256sum "$tmp/$name" | awk '{print $1}')
[ "$got" = "$want" ] || die "sha256 mismatch for $name: expected $want, got $got (nothing installed)"

printf 'untrusted comment: vm-agent release key\n%s\n' "$PUBKEY" > "$tmp/key.pub"
minisign -V -q -p "$tmp/key.pub" -m "$tmp/$name" -x "$tmp/$name.minisig" >/dev/null 2>&1 ||
	die "minisign signature of $name does not verify against the pinned key (nothing installed)"

chmod 0755 "$tmp/$name"
"$tmp/$name" install "$@"
