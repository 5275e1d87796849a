package bus

import (
	"fmt"
	"os"
	"testing"
)

// The variable StopProcSampler empties is nats-server's sampler's file:
// this process's stat file, set by the pse package's init. A nats-server
// that samples otherwise makes this fail, not StopProcSampler silently do
// nothing.
func TestProcSamplerFile(t *testing.T) {
	if want := fmt.Sprintf("/proc/%d/stat", os.Getpid()); pseProcStatFile != want {
		t.Fatalf("nats-server's sampler reads %q, want %q: StopProcSampler would not stop it", pseProcStatFile, want)
	}
}
