package keys

import (
	"strings"
	"testing"
)

func TestLookup(t *testing.T) {
	for _, tc := range []struct {
		key string
		ok  bool
		typ Type
		ro  bool
	}{
		{"totem.token", true, U32, false},
		{"totem.cluster_name", true, Str, true},
		{"nodelist.node.3.ring0_addr", true, Str, true},
		{"nodelist.node.3.ring1_addr", true, Str, true},
		{"nodelist.node.3.ringx_addr", false, "", false},
		{"nodelist.node.0.bus_port", true, U16, true},
		{"logging.logger_subsys.QUORUM.debug", true, Str, false},
		{"uidgid.config.uid.1000", true, U8, true},
		{"uidgid.uid.1000", true, U8, false},
		{"quorum.two_node", true, U8, false},
		{"totem.tokn", false, "", false},
		{"totem", false, "", false},
		{"totem.interface..mcastport", false, "", false},
	} {
		k, ok := Lookup(tc.key)
		if ok != tc.ok || k.Type != tc.typ || k.ReadOnly != tc.ro {
			t.Errorf("Lookup(%q) = %+v, %v; want type %q ro %v ok %v", tc.key, k, ok, tc.typ, tc.ro, tc.ok)
		}
	}
}

func TestSuggest(t *testing.T) {
	for in, want := range map[string]string{
		"totem.tokn":                 "totem.token",
		"totem.cluster-name":         "totem.cluster_name",
		"nodelist.node.0.ring0addr":  "nodelist.node.0.ring0_addr",
		"logging.to_stdeer":          "logging.to_stderr",
		"completely.different.thing": "",
	} {
		if got := Suggest(in); got != want {
			t.Errorf("Suggest(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		key, value, err string
	}{
		{"totem.token", "5000", ""},
		{"totem.token", "0x10", ""},
		{"totem.token", "-1", "unsigned 32-bit"},
		{"totem.token", "soon", "unsigned 32-bit"},
		{"quorum.two_node", "256", "unsigned 8-bit"},
		{"totem.knet_compression_level", "-3", ""},
		{"totem.cluster_name", "anything at all", ""},
		{"no.such.key", "1", "unknown key"},
	} {
		err := Validate(tc.key, tc.value)
		if (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("Validate(%q, %q) = %v, want %q", tc.key, tc.value, err, tc.err)
		}
	}
}
