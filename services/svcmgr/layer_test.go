package svcmgr_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/corobus/corobus/config"
	"github.com/corobus/corobus/services/svcmgr"
)

func TestConfiguredServices(t *testing.T) {
	tests := []struct {
		name  string
		conf  string
		want  []svcmgr.Service
		isErr bool
	}{
		{name: "none", conf: "", want: nil},
		{
			name: "corosync 1.x service blocks in file order",
			conf: "service {\n name: pacemaker\n ver: 1\n}\nservice {\n name: corosync_cpg\n}\nservice {\n name: example\n ver: 3\n}\n",
			want: []svcmgr.Service{{Name: "pacemaker", Version: 1}, {Name: "corosync_cpg", Version: 0}, {Name: "example", Version: 3}},
		},
		{name: "a block without a name", conf: "service {\n ver: 1\n}\n", isErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "corosync.conf")
			conf := "totem {\n version: 2\n cluster_name: t\n}\nnodelist {\n node {\n  nodeid: 1\n  ring0_addr: 127.0.0.1\n }\n}\n" + tc.conf
			if err := os.WriteFile(p, []byte(conf), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg, err := config.Load(config.Options{File: p})
			if err != nil {
				t.Fatal(err)
			}
			got, err := svcmgr.ConfiguredServices(cfg)
			if tc.isErr {
				if err == nil {
					t.Fatalf("expected an error, got %v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
	if got := svcmgr.ServiceKey("corosync_cpg"); got != "cpg" {
		t.Errorf("ServiceKey(corosync_cpg) = %q, want cpg", got)
	}
}
