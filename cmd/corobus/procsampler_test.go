package main

import "testing"

// Only the command lines that run a nats-server keep its process-usage
// sampler (bus.StopProcSampler).
func TestRunsServer(t *testing.T) {
	for _, c := range []struct {
		args []string
		want bool
	}{
		{nil, false},
		{[]string{"bus", "-c", "x.conf"}, true},
		{[]string{"up"}, false},
		{[]string{"up", "-c", "x.conf"}, false},
		{[]string{"up", "--inproc"}, true},
		{[]string{"up", "-inproc=true", "-c", "x.conf"}, true},
		{[]string{"objdb", "-c", "x.conf"}, false},
		{[]string{"service", "cmap"}, false},
		{[]string{"cmap", "-g", "totem.token"}, false},
	} {
		if got := runsServer(c.args); got != c.want {
			t.Errorf("runsServer(%q) = %v, want %v", c.args, got, c.want)
		}
	}
}
