// Package faultproxy is a fault-injecting TCP proxy for tests of the bus: a
// route between two embedded nats-servers goes through one, and the test
// pauses it (a partition), delays it, or cuts its connections (message
// loss).
//
// A paused proxy reads everything its peers send and holds it, as the
// network and the kernels' TCP buffers hold segments during a short
// partition: when the pause ends the held bytes flow on, late. Cut closes
// every connection at once: bytes in flight are lost, as when a route
// breaks, and the servers reconnect.
package faultproxy

import (
	"fmt"
	"net"
	"sync"
	"time"
)

// Proxy forwards connections accepted on its address to a target.
type Proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	cond   *sync.Cond
	paused bool
	delay  time.Duration
	refuse bool
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// Start listens on 127.0.0.1 (a free port) and forwards to target.
func Start(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listening: %w", err)
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// SetTarget changes where new connections go (a restarted peer on
// another port).
func (p *Proxy) SetTarget(target string) {
	p.mu.Lock()
	p.target = target
	p.mu.Unlock()
}

// Addr is host:port to dial instead of the target.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Pause holds every byte in both directions until Resume.
func (p *Proxy) Pause() {
	p.mu.Lock()
	p.paused = true
	p.mu.Unlock()
}

// Resume lets held and new bytes flow again.
func (p *Proxy) Resume() {
	p.mu.Lock()
	p.paused = false
	p.cond.Broadcast()
	p.mu.Unlock()
}

// SetDelay delays every chunk by d (0: none), in order.
func (p *Proxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.cond.Broadcast()
	p.mu.Unlock()
}

// Cut closes every connection now; bytes in flight or held are lost.
func (p *Proxy) Cut() {
	p.mu.Lock()
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
}

// Refuse makes the proxy close new connections at once (a peer that is
// down), or accept them again.
func (p *Proxy) Refuse(refuse bool) {
	p.mu.Lock()
	p.refuse = refuse
	p.mu.Unlock()
}

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	p.paused = false
	p.cond.Broadcast()
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	_ = p.ln.Close()
	p.wg.Wait()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refuse := p.refuse || p.closed
		target := p.target
		p.mu.Unlock()
		// A target that is the proxy itself (its port was handed out
		// twice) would have every connection dial the next one, until
		// the process runs out of descriptors: refused, as a peer that
		// is down.
		if refuse || target == p.ln.Addr().String() {
			_ = in.Close()
			continue
		}
		out, err := net.DialTimeout("tcp", target, time.Second)
		if err != nil {
			_ = in.Close()
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = in.Close()
			_ = out.Close()
			return
		}
		p.conns[in] = struct{}{}
		p.conns[out] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(in, out)
		go p.pipe(out, in)
	}
}

type chunk struct {
	at   time.Time
	data []byte
}

// pipe copies src to dst through a queue: a reader that never blocks on
// the pause (so the sending server never stalls) and a writer that honours
// pause and delay.
func (p *Proxy) pipe(src, dst net.Conn) {
	defer p.wg.Done()
	var qmu sync.Mutex
	var queue []chunk
	done := false
	wake := make(chan struct{}, 1)
	go func() {
		buf := make([]byte, 64<<10)
		for {
			k, err := src.Read(buf)
			if k > 0 {
				qmu.Lock()
				queue = append(queue, chunk{at: time.Now(), data: append([]byte(nil), buf[:k]...)})
				qmu.Unlock()
				select {
				case wake <- struct{}{}:
				default:
				}
			}
			if err != nil {
				qmu.Lock()
				done = true
				qmu.Unlock()
				select {
				case wake <- struct{}{}:
				default:
				}
				return
			}
		}
	}()
	defer func() {
		_ = src.Close()
		_ = dst.Close()
		p.mu.Lock()
		delete(p.conns, src)
		delete(p.conns, dst)
		p.mu.Unlock()
	}()
	for {
		qmu.Lock()
		if len(queue) == 0 {
			fin := done
			qmu.Unlock()
			if fin {
				return
			}
			<-wake
			continue
		}
		c := queue[0]
		qmu.Unlock()
		// Wait out a pause or the chunk's delay.
		p.mu.Lock()
		for p.paused && !p.closed {
			p.cond.Wait()
		}
		delay, closed := p.delay, p.closed
		p.mu.Unlock()
		if closed {
			return
		}
		if d := time.Until(c.at.Add(delay)); d > 0 {
			time.Sleep(min(d, 20*time.Millisecond))
			continue // re-check pause and delay changes
		}
		if _, err := dst.Write(c.data); err != nil {
			return // the peer went away: the route reconnects
		}
		qmu.Lock()
		queue[0] = chunk{}
		queue = queue[1:]
		qmu.Unlock()
	}
}
