package faultproxy_test

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"

	"github.com/corobus/corobus/bus/faultproxy"
)

// echoServer answers every line with itself, until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

func roundTrip(t *testing.T, addr string) (string, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return "", err
	}
	return bufio.NewReader(c).ReadString('\n')
}

func TestForwards(t *testing.T) {
	p, err := faultproxy.Start(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if got, err := roundTrip(t, p.Addr()); err != nil || got != "ping\n" {
		t.Fatalf("through the proxy: %q, %v", got, err)
	}
}

// A proxy whose target is its own address (a port handed out twice)
// closes what it accepts instead of dialling itself: before the guard,
// every connection dialled the next until the process ran out of file
// descriptors. A later SetTarget to a real peer works.
func TestRefusesItselfAsTarget(t *testing.T) {
	p, err := faultproxy.Start("127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.SetTarget(p.Addr())
	for range 3 {
		got, err := roundTrip(t, p.Addr())
		if err == nil {
			t.Fatalf("a proxy targeting itself answered %q", got)
		}
		// Closed at once, not left hanging while it dials itself.
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("a proxy targeting itself held the connection open: %v", err)
		}
	}
	p.SetTarget(echoServer(t))
	if got, err := roundTrip(t, p.Addr()); err != nil || got != "ping\n" {
		t.Fatalf("after SetTarget to a peer: %q, %v", got, err)
	}
}
