#!/bin/sh
# Prints the Debian archive this machine's apt is configured for: the first
# URI of an enabled "deb" entry that is not a security archive, from
# sources.list.d/*.sources (deb822 "URIs:") or sources.list / *.list (one-line).
# There is deliberately no fallback host: without a configured archive it
# fails and says so. APT_ETC (default /etc/apt) is for tests.
set -eu
etc=${APT_ETC:-/etc/apt}

# deb822: one paragraph per entry; only the first URI of a paragraph is used.
from_deb822() {
	for f in "$etc"/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		awk '
		function flush() {
			if (uri != "" && deb && enabled && !security) { print uri; found = 1; exit }
			uri = ""; deb = 0; enabled = 1; security = 0
		}
		BEGIN { enabled = 1 }
		/^[ \t]*#/ { next }
		/^[ \t]*$/ { flush(); next }
		{
			key = tolower($1); sub(/:$/, "", key)
			if (key == "types") { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
			else if (key == "uris" && uri == "") uri = $2
			else if (key == "enabled" && tolower($2) == "no") enabled = 0
			else if (key == "suites") { for (i = 2; i <= NF; i++) if ($i ~ /-security$/) security = 1 }
		}
		END { if (!found) flush() }
		' "$f"
	done
}

# one-line: deb [options] URI SUITE COMPONENTS…
from_oneline() {
	for f in "$etc"/sources.list "$etc"/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		awk '
		$1 != "deb" { next }
		{
			for (i = 2; i <= NF; i++) if ($i ~ /^(https?|file):/) break
			if (i > NF || $(i + 1) ~ /-security$/) next
			print $i; exit
		}
		' "$f"
	done
}

mirror=$( (from_deb822; from_oneline) | head -n1)
if [ -z "$mirror" ]; then
	echo "apt-mirror: no Debian archive configured in $etc/sources.list or" \
	     "$etc/sources.list.d/ (an enabled 'deb' entry, not a security archive);" \
	     "add the mirror this machine should use there" >&2
	exit 1
fi
echo "$mirror"
