package corosyncconf

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/knadh/koanf/maps"
	"github.com/knadh/koanf/providers/rawbytes"
	"github.com/knadh/koanf/v2"

	"github.com/corobus/corobus/config/keys"
)

func flat(t *testing.T, name string, b []byte) (map[string]any, *Parser) {
	t.Helper()
	p := New(name)
	m, err := p.Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	f, _ := maps.Flatten(m, nil, ".")
	return f, p
}

func TestExamples(t *testing.T) {
	for _, tc := range []struct {
		file string
		want map[string]string
	}{
		{"udpu-1x.conf", map[string]string{
			"compatibility":                      "whitetank",
			"totem.token":                        "5000",
			"totem.interface.0.bindnetaddr":      "192.168.10.0",
			"totem.interface.1.mcastport":        "5407",
			"logging.logger_subsys.QUORUM.debug": "on",
			"logging.logger_subsys.AMF.subsys":   "AMF",
			"service.0.name":                     "pacemaker",
			"service.1.name":                     "corosync_cpg",
			"service.1.ver":                      "0",
			"uidgid.config.uid.0":                "1",
			"uidgid.config.gid.0":                "1",
		}},
		{"knet-3node.conf", map[string]string{
			"totem.cluster_name":                   "hacluster",
			"totem.interface.0.knet_link_priority": "1",
			"nodelist.node.0.ring1_addr":           "172.16.0.1",
			"nodelist.node.1.quorum_votes":         "2",
			"nodelist.node.2.name":                 "gamma",
			"quorum.auto_tie_breaker_node":         "lowest",
		}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			got, p := flat(t, tc.file, b)
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %v, want %q", k, got[k], v)
				}
				if p.Positions()[k] == 0 {
					t.Errorf("%s has no line", k)
				}
			}
			for k, v := range got {
				if err := keys.Validate(k, v.(string)); err != nil {
					t.Errorf("schema: %v", err)
				}
			}
			// Marshal round-trips.
			out, err := p.Marshal(mustUnmarshal(t, b))
			if err != nil {
				t.Fatal(err)
			}
			again, _ := flat(t, tc.file+" (marshalled)", out)
			if !reflect.DeepEqual(got, again) {
				t.Errorf("round trip differs:\n%s", out)
			}
		})
	}
}

func mustUnmarshal(t *testing.T, b []byte) map[string]any {
	t.Helper()
	m, err := New("x").Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// Debian's corosync package ships a corosync.conf: it must load unchanged.
func TestDebianShippedConfig(t *testing.T) {
	const path = "/etc/corosync/corosync.conf"
	b, err := os.ReadFile(path)
	if err != nil {
		t.Skipf("Debian's corosync package is not installed (%v): apt-get install corosync to run this test", err)
	}
	got, _ := flat(t, path, b)
	if got["totem.version"] != "2" || got["nodelist.node.0.ring0_addr"] == nil {
		t.Errorf("unexpected parse of %s: %v", path, got)
	}
	for k, v := range got {
		if err := keys.Validate(k, v.(string)); err != nil {
			t.Errorf("schema: %v", err)
		}
	}
}

func TestSyntaxErrors(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		line       int
		msg        string
	}{
		{"no colon", "totem {\n\tversion 2\n}\n", 2, `expected "key: value", "name {" or "}", found "version 2"`},
		{"missing brace", "totem {\n\tversion: 2\n\n", 3, `missing "}" for section "totem" opened at line 1`},
		{"extra brace", "totem {\n}\n}\n", 3, `unexpected "}"`},
		{"junk after brace", "totem {\n} x\n", 2, `expected "}" alone on its line`},
		{"junk after open", "totem { x\n}\n", 1, `after "{"`},
		{"nameless section", "{\n}\n", 1, "missing section name"},
		{"empty key", "totem {\n: 3\n}\n", 2, "empty key"},
		{"subsys missing", "logging {\nlogger_subsys {\ndebug: on\n}\n}\n", 2, "without a subsys"},
		{"uidgid junk", "uidgid {\nuser: 3\n}\n", 2, "expected uid or gid"},
		{"unknown user", "uidgid {\nuid: no-such-user-here\n}\n", 2, "unknown user"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New("c.conf").Unmarshal([]byte(tc.body))
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("err = %v, want a SyntaxError", err)
			}
			if se.Line != tc.line || !strings.Contains(se.Msg, tc.msg) || !strings.HasPrefix(err.Error(), "c.conf:") {
				t.Errorf("got %v; want line %d saying %q", err, tc.line, tc.msg)
			}
		})
	}
}

// The parser plugs into koanf like any other.
func TestKoanf(t *testing.T) {
	k := koanf.New(".")
	if err := k.Load(rawbytes.Provider([]byte("totem {\n token: 42\n}\n")), New("x")); err != nil {
		t.Fatal(err)
	}
	if k.String("totem.token") != "42" {
		t.Errorf("totem.token = %q", k.String("totem.token"))
	}
}

func FuzzUnmarshal(f *testing.F) {
	for _, s := range []string{"totem {\n token: 1\n}\n", "a {\nb {\n}\n}\n", "}\n", "logging {\nlogger_subsys {\nsubsys: X\n}\n}\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p := New("fuzz")
		m, err := p.Unmarshal(b)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("error is not a SyntaxError: %v", err)
			}
			return
		}
		if _, err := p.Marshal(m); err != nil {
			t.Fatalf("marshal of a parsed file: %v", err)
		}
	})
}
