// Package node runs a whole corobus node: the bus in its own process and
// every other layer as a supervised child process of the same binary, or,
// for tests and embedding, every layer as an actor of one run.Group.
package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/corobus/corobus/logsys"
)

// Child describes one supervised layer process.
type Child struct {
	// Name is the layer's name; its output lines are prefixed with it.
	Name string
	// Path and Args start it (Args excludes the program name).
	Path string
	Args []string
	// Ready, when set, is polled after each start; the supervisor starts
	// the next child only when it returns nil (or the context ends).
	Ready func(ctx context.Context) error
	// Files are handed to the child as descriptors 3, 4, …, and Env is
	// added to its environment (the state directory lock).
	Files []*os.File
	Env   []string
}

// Backoff bounds the delay between restarts of a child that keeps failing.
type Backoff struct {
	Min, Max time.Duration
	// Stable is how long a child must run before its backoff resets.
	Stable time.Duration
}

// next is the delay after delay, for a child that failed again quickly.
func (b Backoff) next(delay time.Duration) time.Duration { return min(delay*2, b.Max) }

// DefaultBackoff restarts quickly at first, then ever more slowly while a
// child keeps failing, at most every 30 s: a layer in a restart loop costs
// two starts (and their log lines) a minute, not one every few seconds.
func DefaultBackoff() Backoff {
	return Backoff{Min: 100 * time.Millisecond, Max: 30 * time.Second, Stable: 10 * time.Second}
}

// Supervisor starts children in order, restarts them when they exit, and
// stops them in reverse order.
type Supervisor struct {
	log *slog.Logger
	// loops logs restarts: a child in a restart loop is reported once,
	// then summarized with a count at a bounded rate.
	loops   *slog.Logger
	loopsTh *logsys.Throttle
	out     io.Writer
	backoff Backoff
	// StopTimeout is how long a child has after SIGTERM before SIGKILL.
	stopTimeout time.Duration

	mu       sync.Mutex
	restarts map[string]int
	// running is each child's process while it runs (for Crash);
	// crashed, the children Crash killed, which are not restarted.
	running map[string]*runningChild
	crashed map[string]bool
}

// runningChild is a started child: its process, and a channel closed
// once it has been waited for.
type runningChild struct {
	proc   *os.Process
	exited chan struct{}
}

// NewSupervisor builds a supervisor writing children's prefixed output to
// out.
func NewSupervisor(log *slog.Logger, out io.Writer, backoff Backoff, stopTimeout time.Duration) *Supervisor {
	th := logsys.NewThrottle(logsys.DefaultThrottleWindow, 1)
	return &Supervisor{log: log, loops: logsys.RepeatingWith(log, th), loopsTh: th, out: out, backoff: backoff, stopTimeout: stopTimeout,
		restarts: map[string]int{}, running: map[string]*runningChild{}, crashed: map[string]bool{}}
}

// Crash kills the child name with SIGKILL, as a power cut would, and
// returns once it has exited; it is not restarted. The other children go
// on running until Run's context ends. A node killed by another node
// (corosync-cfgtool -k) crashes its bus first: corosync exits at once
// there, so nothing the node's other layers would say while they stop
// (a CPG member's leave, votequorum's clean leave) may reach the others.
func (s *Supervisor) Crash(name string) {
	s.mu.Lock()
	s.crashed[name] = true
	r := s.running[name]
	s.mu.Unlock()
	if r == nil {
		return
	}
	_ = r.proc.Kill()
	<-r.exited
}

// Restarts reports how often each child was restarted.
func (s *Supervisor) Restarts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.restarts))
	for k, v := range s.restarts {
		out[k] = v
	}
	return out
}

// Run starts the children in order and keeps them running until ctx ends;
// then it stops them in reverse order, each completely before the next, and
// returns once every child has exited.
func (s *Supervisor) Run(ctx context.Context, children []Child) error {
	// Each child gets its own stop signal so that shutdown can walk the
	// list backwards.
	type running struct {
		stop context.CancelFunc
		done chan struct{}
	}
	var started []running
	var startErr error
	for _, c := range children {
		cctx, stop := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan struct{})
		ready := make(chan error, 1)
		go func() {
			defer close(done)
			s.keep(cctx, c, ready)
		}()
		started = append(started, running{stop: stop, done: done})
		select {
		case err := <-ready:
			if err != nil {
				startErr = fmt.Errorf("starting %s: %w", c.Name, err)
			}
		case <-ctx.Done():
		}
		if startErr != nil || ctx.Err() != nil {
			break
		}
	}
	if startErr == nil {
		<-ctx.Done()
	}
	for i := len(started) - 1; i >= 0; i-- {
		started[i].stop()
		<-started[i].done
	}
	s.loopsTh.Flush() // the last restart counts
	return startErr
}

// keep runs one child until ctx ends, restarting it with backoff. It
// reports the first readiness result on ready.
func (s *Supervisor) keep(ctx context.Context, c Child, ready chan<- error) {
	delay := s.backoff.Min
	first := true
	for {
		began := time.Now()
		err := s.runOnce(ctx, c, func() {
			if !first {
				return
			}
			first = false
			if c.Ready == nil {
				ready <- nil
				return
			}
			go func() { ready <- c.Ready(ctx) }()
		})
		if first {
			// It never started at all (bad path, …): nothing to retry.
			ready <- err
			return
		}
		if ctx.Err() != nil {
			return
		}
		s.mu.Lock()
		crashed := s.crashed[c.Name]
		s.mu.Unlock()
		if crashed {
			<-ctx.Done()
			return
		}
		if time.Since(began) > s.backoff.Stable {
			delay = s.backoff.Min
		}
		s.mu.Lock()
		n := s.restarts[c.Name] + 1
		s.mu.Unlock()
		s.loops.Warn("layer exited; restarting", "layer", c.Name, "err", err, "in", delay, "restart", n)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return
		}
		delay = s.backoff.next(delay)
		s.mu.Lock()
		s.restarts[c.Name]++
		s.mu.Unlock()
	}
}

// runOnce starts the child and waits for it. When ctx ends it sends SIGTERM,
// then SIGKILL after the stop timeout.
func (s *Supervisor) runOnce(ctx context.Context, c Child, started func()) error {
	// Pdeathsig is delivered when the thread that forked the child exits,
	// not the process: keep this goroutine on its thread for the child's
	// whole life so that the child is told only when the supervisor dies.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	s.mu.Lock()
	restarts := s.restarts[c.Name]
	s.mu.Unlock()
	args := append(append([]string{}, c.Args...), "--restarts", strconv.Itoa(restarts))
	cmd := exec.Command(c.Path, args...)
	cmd.ExtraFiles = c.Files
	if len(c.Env) > 0 {
		cmd.Env = append(os.Environ(), c.Env...)
	}
	// A process group of its own: a terminal's ^C (SIGINT to the
	// foreground process group), timeout(1) or a kill of the group reach
	// the supervisor alone, which stops its children in reverse order.
	// In the group, every layer died at once, and the supervisor
	// restarted the first ones (bus, objdb, …) while it was still
	// stopping the last (a new bus formed a ring again, seen on one node).
	// A killed supervisor is a killed node: its layers die with it at
	// once (SIGKILL), as a killed corosync's services do. With SIGTERM
	// they stopped one by one, and the IPC gateway's closed connections
	// told the other nodes that the node's CPG members had left
	// (PROCDOWN) where corosync's peers see them go with the node
	// (NODEDOWN).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("piping %s's stdout: %w", c.Name, err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return fmt.Errorf("piping %s's stderr: %w", c.Name, err)
	}
	s.mu.Lock()
	crashed := s.crashed[c.Name]
	s.mu.Unlock()
	if crashed {
		return fmt.Errorf("%s: crashed on purpose", c.Name)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", c.Name, err)
	}
	rc := &runningChild{proc: cmd.Process, exited: make(chan struct{})}
	s.mu.Lock()
	s.running[c.Name] = rc
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.running, c.Name)
		s.mu.Unlock()
		close(rc.exited)
	}()
	var copying sync.WaitGroup
	copying.Add(2)
	go s.prefix(&copying, c.Name, stdout)
	go s.prefix(&copying, c.Name, stderr)
	started()

	exited := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(s.stopTimeout):
				s.log.Warn("layer did not stop in time; killing it", "layer", c.Name, "timeout", s.stopTimeout)
				_ = cmd.Process.Kill()
			}
		case <-exited:
		}
	}()
	// Output must be drained before Wait closes the pipes.
	copying.Wait()
	err = cmd.Wait()
	close(exited)
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("%s: %w", c.Name, err)
	}
	return errors.New(c.Name + " exited")
}

// prefix copies a child's output line by line, each line prefixed with the
// layer's name, the way one reads a node's combined log.
func (s *Supervisor) prefix(wg *sync.WaitGroup, name string, r io.Reader) {
	defer wg.Done()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		s.mu.Lock()
		fmt.Fprintf(s.out, "%-8s| %s\n", name, sc.Text())
		s.mu.Unlock()
	}
}

// Executable is the path children are started from: this very binary.
func Executable() (string, error) {
	p, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("finding the corobus executable: %w", err)
	}
	return p, nil
}
