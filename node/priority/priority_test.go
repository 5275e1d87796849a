package priority

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/corobus/corobus/config"
)

func TestFromConfigIsCorosyncs(t *testing.T) {
	for _, tc := range []struct {
		over []string
		want Setting
	}{
		{nil, Setting{}},
		{[]string{"system.sched_rr=yes", "system.priority=5"}, Setting{}},
		{[]string{"system.sched_rr=no"}, Setting{}},
		{[]string{"system.sched_rr=no", "system.priority=max"}, Setting{Nice: -20, Set: true}},
		{[]string{"system.sched_rr=no", "system.priority=min"}, Setting{Nice: 19, Set: true}},
		{[]string{"system.sched_rr=no", "system.priority=-5"}, Setting{Nice: -5, Set: true}},
	} {
		c, err := config.Load(config.Options{Overrides: tc.over, UserStateDir: t.TempDir()})
		if err != nil {
			t.Fatalf("%v: %v", tc.over, err)
		}
		got, err := FromConfig(c)
		if err != nil || got != tc.want {
			t.Errorf("%v: %+v, %v; want %+v", tc.over, got, err, tc.want)
		}
	}
}

// A typo in corosync.conf's system.priority is refused at load, with its
// file and line, as any badly spelled value.
func TestBadPriorityIsRefusedWithItsLine(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "corosync.conf")
	conf := "totem {\n\tversion: 2\n\tcluster_name: c\n}\nsystem {\n\tsched_rr: no\n\tpriority: maxx\n}\nnodelist {\n\tnode {\n\t\tring0_addr: 127.0.0.1\n\t\tnodeid: 1\n\t}\n}\n"
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := config.Load(config.Options{File: file})
	if err == nil {
		t.Fatal("priority: maxx accepted")
	}
	for _, want := range []string{file + ":7", "system.priority", "maxx"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	for _, bad := range []string{"-21", "20", "high"} {
		if _, err := config.Load(config.Options{Overrides: []string{"system.sched_rr=no", "system.priority=" + bad}, UserStateDir: t.TempDir()}); err == nil {
			t.Errorf("system.priority=%s accepted", bad)
		}
	}
}

const childEnv = "COROBUS_PRIORITY_TEST_CHILD"

// Apply sets every thread of the process, those the Go runtime makes
// afterwards and the processes it starts: run in a child process (a nice
// value never goes back down without privilege), raising it to 7, which
// anyone may.
func TestApplyReachesEveryThreadAndChild(t *testing.T) {
	if os.Getenv(childEnv) == "1" {
		applyChild()
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestApplyReachesEveryThreadAndChild$")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	var threads int
	var child bool
	for _, line := range strings.Split(string(out), "\n") {
		if rest, ok := strings.CutPrefix(line, "NICE "); ok {
			what, nice, _ := strings.Cut(rest, " ")
			if nice != "7" {
				t.Errorf("%s at nice %s, want 7", what, nice)
			}
			if strings.HasPrefix(what, "thread") {
				threads++
			}
			child = child || what == "child"
		}
	}
	if threads < 2 {
		t.Fatalf("the child reported %d threads:\n%s", threads, out)
	}
	if !child {
		t.Fatalf("the child reported no nice value of a process it started:\n%s", out)
	}
}

func applyChild() {
	Apply(Setting{Nice: 7, Set: true}, slog.New(slog.NewTextHandler(os.Stdout, nil)), false)
	// Threads made after Apply: goroutines locked to threads of their own.
	var wg sync.WaitGroup
	hold := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			runtime.LockOSThread()
			wg.Done()
			<-hold
		}()
	}
	wg.Wait()
	tids, err := threads()
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	for _, tid := range tids {
		n, err := Nice(tid)
		if err != nil {
			continue // gone meanwhile
		}
		fmt.Printf("NICE thread-%d %d\n", tid, n)
	}
	// A process started now: the 19th field of /proc/self/stat.
	out, err := exec.Command("cat", "/proc/self/stat").Output()
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	s := string(out)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 17 {
		fmt.Println("ERROR /proc/self/stat of the started process:", s)
		os.Exit(1)
	}
	n, err := strconv.Atoi(f[16])
	if err != nil {
		fmt.Println("ERROR nice field of /proc/self/stat:", err)
		os.Exit(1)
	}
	fmt.Printf("NICE child %d\n", n)
	close(hold)
}
