package bus

import (
	_ "unsafe" // go:linkname
)

// nats-server's pse package starts, in its init, a sampler of the
// process's CPU usage that reads /proc/self/stat every second for the
// life of the process and never stops (it feeds the server's varz and
// statsz). Every corobus process links nats-server — one binary for
// every layer — so every layer process, the supervisor and each
// component woke for it once a second, though only the bus runs a
// server. The sampler reschedules itself only after a successful read:
// no file, no next tick.
//
//go:linkname pseProcStatFile github.com/nats-io/nats-server/v2/server/pse.procStatFile
var pseProcStatFile string

// StopProcSampler stops nats-server's process-usage sampler in a process
// that runs no server: its next tick (within a second) is its last. Call
// it first thing in main, before the sampler's first tick, and never in
// a process that runs a server (its varz and statsz report the process's
// CPU from it).
func StopProcSampler() { pseProcStatFile = "" }
