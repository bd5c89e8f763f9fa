#!/bin/sh
# Prints one-line "deb-src" entries matching every enabled "deb" entry of this
# machine's apt sources (deb822 *.sources and one-line sources.list / *.list),
# so a private apt state can fetch the source packages of exactly the archives
# (main, updates, security) the machine installs from. Like apt-mirror.sh there
# is no built-in host: without a configured archive it fails and says so.
# APT_ETC (default /etc/apt) is for tests.
set -eu
etc=${APT_ETC:-/etc/apt}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg

from_deb822() {
	for f in "$etc"/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		awk -v kr="$keyring" '
		function flush(   i, j, nu, ns, u, s) {
			if (deb && enabled && uris != "" && suites != "") {
				nu = split(uris, u, " "); ns = split(suites, s, " ")
				for (i = 1; i <= nu; i++) for (j = 1; j <= ns; j++)
					printf "deb-src [signed-by=%s] %s %s %s\n", (sb != "" ? sb : kr), u[i], s[j], comps
			}
			uris = ""; suites = ""; comps = ""; sb = ""; deb = 0; enabled = 1
		}
		BEGIN { enabled = 1 }
		/^[ \t]*#/ { next }
		/^[ \t]*$/ { flush(); next }
		{
			key = tolower($1); sub(/:$/, "", key); $1 = ""; sub(/^ +/, "")
			if (key == "types") { if ((" " $0 " ") ~ / deb /) deb = 1 }
			else if (key == "uris") uris = $0
			else if (key == "suites") suites = $0
			else if (key == "components") comps = $0
			else if (key == "signed-by" && $0 ~ /^\//) sb = $0
			else if (key == "enabled" && tolower($0) == "no") enabled = 0
		}
		END { flush() }
		' "$f"
	done
}

from_oneline() {
	for f in "$etc"/sources.list "$etc"/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		awk -v kr="$keyring" '
		$1 != "deb" { next }
		{
			sb = kr
			for (i = 2; i <= NF; i++) {
				if ($i ~ /^(https?|file):/) break
				o = $i; gsub(/[][]/, "", o)
				if (o ~ /^signed-by=\//) sb = substr(o, 11)
			}
			if (i > NF) next
			line = "deb-src [signed-by=" sb "]"
			for (j = i; j <= NF; j++) line = line " " $j
			print line
		}
		' "$f"
	done
}

out=$( (from_deb822; from_oneline) | awk '!seen[$0]++')
if [ -z "$out" ]; then
	echo "apt-deb-src: no Debian archive configured in $etc/sources.list or" \
	     "$etc/sources.list.d/ (an enabled 'deb' entry)" >&2
	exit 1
fi
echo "$out"
