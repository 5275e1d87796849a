package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/corobus/corobus/config"
	"github.com/corobus/corobus/logsys"
)

// TestLogsysForSyslog: the logging section of a corosync.conf reaches a
// layer process's logging, syslog keys and logger_subsys overrides
// included.
func TestLogsysForSyslog(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "log")
	d, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	conf := filepath.Join(dir, "corosync.conf")
	body := `totem {
	version: 2
	cluster_name: logtest
}
logging {
	to_stderr: no
	to_syslog: yes
	syslog_facility: local1
	syslog_socket: ` + sock + `
	logger_subsys {
		subsys: QUORUM
		syslog_priority: warning
	}
}
nodelist {
	node {
		nodeid: 4
		ring0_addr: 127.0.0.1
	}
}
`
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(config.Options{File: conf, Overrides: []string{"system.state_dir=" + dir}})
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	a := &app{stdout: &stderr, stderr: &stderr}
	ls, err := a.logsysFor(cfg, "quorum")
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	log := ls.Logger()
	logsys.For(log, "QUORUM").Info("below the subsystem's priority")
	logsys.For(log, "QUORUM").Warn("quorum lost")
	logsys.For(log, "CPG").Info("joined")
	var got []string
	buf := make([]byte, 4096)
	_ = d.SetReadDeadline(time.Now().Add(10 * time.Second))
	for len(got) < 2 {
		n, err := d.Read(buf)
		if err != nil {
			t.Fatalf("after %q: %v", got, err)
		}
		got = append(got, string(buf[:n]))
	}
	pid := "corobus[" + strconv.Itoa(os.Getpid()) + "]: "
	// local1 (17): warning 17*8+4, info 17*8+6.
	if !strings.HasPrefix(got[0], "<140>") || !strings.HasSuffix(got[0], pid+"node4 quorum [QUORUM] quorum lost") ||
		!strings.HasPrefix(got[1], "<142>") || !strings.HasSuffix(got[1], pid+"node4 quorum [CPG   ] joined") {
		t.Errorf("syslog got %q", got)
	}
	if stderr.Len() != 0 {
		t.Errorf("stderr: %q", stderr.String())
	}
}
