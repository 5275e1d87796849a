package objdb

import (
	"fmt"
	"strings"
	"syscall"
)

// lowSpace is the free space under which a node's state directory counts
// as full: JetStream cannot write a message block in it any more.
const lowSpace = 1 << 20

// NoSpace says whether the node's store is out of disk space: err says so
// (JetStream's "no space left on device", "insufficient resources"), or the
// filesystem of dir (the node's state directory, JetStream's store) has
// less than lowSpace free. why describes it for the error or the log.
func NoSpace(dir string, err error) (why string, full bool) {
	if err != nil {
		msg := err.Error()
		if strings.Contains(msg, "no space left") || strings.Contains(msg, "insufficient resources") {
			full = true
		}
	}
	if dir != "" {
		var st syscall.Statfs_t
		if syscall.Statfs(dir, &st) == nil {
			free := st.Bavail * uint64(st.Bsize)
			if free < lowSpace {
				return fmt.Sprintf("no space left in the state directory %s (%d bytes free)", dir, free), true
			}
			if full {
				return fmt.Sprintf("no space left on a server of the stream (this node's state directory %s has %d bytes free)", dir, free), true
			}
		}
	}
	if full {
		return "no space left on the JetStream store", true
	}
	return "", false
}
