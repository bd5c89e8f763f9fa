#!/bin/sh
# For each release artifact given: FILE.sha256 (sha256sum format, the bare file
# name) and, when SIGN_KEY names a minisign secret key file, FILE.minisig.
# An unencrypted key signs unattended; an encrypted one asks for its password.
set -eu
for f in "$@"; do
	[ -f "$f" ] || { echo "dist-sign: $f: no such file" >&2; exit 1; }
	(cd "$(dirname "$f")" && sha256sum "$(basename "$f")" > "$(basename "$f").sha256")
	if [ -n "${SIGN_KEY:-}" ]; then
		rm -f "$f.minisig"
		minisign -S -s "$SIGN_KEY" -m "$f" -x "$f.minisig"
	fi
done
