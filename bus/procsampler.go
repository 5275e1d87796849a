package bus

import (
	_ "unsafe" // go:linkname
)

// nats-server's pse package starts, in its init, a sampler of the
// process's CPU usage that reads /proc/self/stat every second for the
// life of the process and never stops. It feeds only the CPU share that
// the server's varz and statsz report. Every corobus process links
// nats-server — one binary for every layer — so every layer process, the
// supervisor and each component woke for it once a second, and so did the
// bus, whose varz nobody reads (no monitoring port; corobus status does
// not ask for it) and whose statsz the other servers keep for their own
// varz. The sampler reschedules itself only after a successful read: no
// file, no next tick.
//
//go:linkname pseProcStatFile github.com/nats-io/nats-server/v2/server/pse.procStatFile
var pseProcStatFile string

// StopProcSampler stops nats-server's process-usage sampler: its next
// tick (within a second) is its last. Call it first thing in main, before
// the sampler's first tick. What it costs a process that runs a server:
// the CPU share and memory in its varz and statsz read 0 (nats-server
// reads the memory from the same file, on demand, and gives up on both
// when it cannot).
func StopProcSampler() { pseProcStatFile = "" }
