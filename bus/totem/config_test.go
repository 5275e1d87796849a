package totem_test

import (
	"strings"
	"testing"
	"time"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/bus/totem"
	"github.com/corobus/corobus/config"
)

// totem.consensus left out is 1.2 × totem.token, as corosync derives it: a
// corosync.conf that raises the token alone (token: 3000) must run
// unchanged, not be refused for a consensus below the token.
func TestFromConfigTimings(t *testing.T) {
	subjects, err := bus.NewSubjects("corobus.test")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		over                   []string
		token, join, consensus time.Duration
		wantErr                string
	}{
		{nil, time.Second, 50 * time.Millisecond, 1200 * time.Millisecond, ""},
		{[]string{"totem.token=3000"}, 3 * time.Second, 50 * time.Millisecond, 3600 * time.Millisecond, ""},
		{[]string{"totem.token=3000", "totem.consensus=2000", "totem.join=80"}, 3 * time.Second, 80 * time.Millisecond, 2 * time.Second, ""},
		{[]string{"totem.token=3000", "totem.consensus=1000"}, 0, 0, 0, "totem.consensus 1s: at least half of totem.token 3s"},
		{[]string{"totem.token=5"}, 0, 0, 0, "totem.token 5ms: at least 10ms"},
	} {
		cfg, err := config.Load(config.Options{Overrides: tc.over, UserStateDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		c, err := totem.FromConfig(cfg, subjects)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%v: err %v, want %q", tc.over, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%v: %v", tc.over, err)
			continue
		}
		if c.Token != tc.token || c.Join != tc.join || c.Consensus != tc.consensus {
			t.Errorf("%v: token %s join %s consensus %s, want %s %s %s", tc.over, c.Token, c.Join, c.Consensus, tc.token, tc.join, tc.consensus)
		}
	}
}
