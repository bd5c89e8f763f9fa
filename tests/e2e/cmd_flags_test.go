package e2e

// The command line as a table: every subcommand's flags are declared once,
// --help is generated from that declaration, and every numeric flag refuses
// what is not a number in range with exit 64 and a message naming the flag.

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// cfSubcommands lists the subcommands `vm-agent help` shows.
func cfSubcommands(t *testing.T) []string {
	t.Helper()
	code, out, _ := runCLI(t, nil, "help")
	if code != 0 {
		t.Fatalf("help: exit %d", code)
	}
	var subs []string
	in := false
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "Subcommands:") {
			in = true
			continue
		}
		if in && strings.TrimSpace(line) == "" {
			break
		}
		if in {
			subs = append(subs, strings.Fields(line)[0])
		}
	}
	if len(subs) < 9 {
		t.Fatalf("help lists %d subcommands:\n%s", len(subs), out)
	}
	return subs
}

type cfFlag struct {
	name, metavar string
	optional      bool // --flag[=VALUE]
}

var cfFlagLine = regexp.MustCompile(`^  (?:-[a-zA-Z], )?--([a-z][a-z0-9-]*)(\[?[ =]([^\s\]]+)\]?)?(\s|$)`)

// cfFlags parses the flags a subcommand's --help lists.
func cfFlags(t *testing.T, sub string) []cfFlag {
	t.Helper()
	code, out, _ := runCLI(t, nil, sub, "--help")
	if code != 0 {
		t.Fatalf("%s --help: exit %d", sub, code)
	}
	var flags []cfFlag
	for _, line := range strings.Split(out, "\n") {
		if m := cfFlagLine.FindStringSubmatch(line); m != nil {
			flags = append(flags, cfFlag{m[1], m[3], strings.HasPrefix(m[2], "[")})
		}
	}
	return flags
}

func cfNumeric(f cfFlag) bool {
	switch f.metavar {
	case "SECS", "S", "N", "MS", "BYTES", "COUNT":
		return true
	}
	return false
}

func TestNumericFlagsRejectGarbage(t *testing.T) {
	root := t.TempDir()
	found := map[string]bool{}
	for _, sub := range cfSubcommands(t) {
		flags := cfFlags(t, sub)
		base := []string{sub}
		for _, f := range flags {
			if f.name == "root" {
				// nothing may be touched outside the test's directory
				base = append(base, "--root", root)
			}
		}
		if sub == "configure" {
			base = append(base, "--show")
		}
		for _, f := range flags {
			if !cfNumeric(f) {
				continue
			}
			found[sub+" --"+f.name] = true
			for _, bad := range []string{"abc", "-1", "1e99", "5x", "", "86401", "18446744073709551617"} {
				args := append(append([]string{}, base...), "--"+f.name, bad)
				code, stdout, stderr := runCLI(t, nil, args...)
				if code != 64 || !strings.Contains(stderr, "--"+f.name+": expected") ||
					!strings.Contains(stderr, "'"+bad+"'") || stdout != "" {
					t.Errorf("%s --%s %q: exit %d (want 64 naming the flag)\nstdout %q\nstderr %q",
						sub, f.name, bad, code, stdout, stderr)
				}
			}
			// the =VALUE spelling goes through the same check
			code, _, stderr := runCLI(t, nil, append(append([]string{}, base...), "--"+f.name+"=abc")...)
			if code != 64 || !strings.Contains(stderr, "--"+f.name+": expected") {
				t.Errorf("%s --%s=abc: exit %d\n%s", sub, f.name, code, stderr)
			}
		}
	}
	for _, want := range []string{"install --health-timeout", "configure --reload-timeout",
		"upgrade --self-test-timeout", "upgrade --health-timeout"} {
		if !found[want] {
			t.Errorf("%s is not listed as a numeric flag in --help (found %v)", want, found)
		}
	}
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Errorf("a rejected command line changed files under --root: %v", entries)
	}
}

func TestEverySubcommandHasHelp(t *testing.T) {
	key := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(key, []byte("ik-test\n"), 0600); err != nil {
		t.Fatal(err)
	}
	for _, sub := range cfSubcommands(t) {
		code, long, errOut := runCLI(t, nil, sub, "--help")
		if code != 0 || !strings.HasPrefix(long, "usage: vm-agent "+sub) || errOut != "" {
			t.Errorf("%s --help: exit %d\nstdout %q\nstderr %q", sub, code, long, errOut)
			continue
		}
		if !strings.Contains(long, "\n  -h, --help") {
			t.Errorf("%s --help does not list -h, --help:\n%s", sub, long)
		}
		if code, short, _ := runCLI(t, nil, sub, "-h"); code != 0 || short != long {
			t.Errorf("%s -h differs from --help (exit %d):\n%s", sub, code, short)
		}
		if code, viaHelp, _ := runCLI(t, nil, "help", sub); code != 0 || viaHelp != long {
			t.Errorf("help %s differs from %s --help (exit %d):\n%s", sub, sub, code, viaHelp)
		}
		// every flag the help lists is one the subcommand takes: the parser
		// reaches the --help after it instead of stopping at an unknown option
		for _, f := range cfFlags(t, sub) {
			if f.name == "help" {
				continue
			}
			args := []string{sub, "--" + f.name}
			switch {
			case f.optional || f.metavar == "":
			case cfNumeric(f):
				args = append(args, "5")
			default:
				args = append(args, key)
			}
			args = append(args, "--help")
			if code, out, errOut := runCLI(t, nil, args...); code != 0 || out != long {
				t.Errorf("%v: exit %d (the help lists a flag the parser refuses?)\n%s%s", args, code, out, errOut)
			}
		}
		if code, _, errOut := runCLI(t, nil, sub, "--no-such-flag"); code != 64 ||
			!strings.Contains(errOut, "unknown option '--no-such-flag'") ||
			!strings.Contains(errOut, "usage: vm-agent "+sub) {
			t.Errorf("%s --no-such-flag: exit %d\n%s", sub, code, errOut)
		}
	}
}
