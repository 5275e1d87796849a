package ipc

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// nameOwner says who listens on the abstract socket name of a libqb
// service in this network namespace — "corosync (pid 812)" — from
// /proc/net/unix and the processes' descriptors; "" when it cannot tell
// (another user's process, no /proc).
func nameOwner(service string) string {
	inode := boundInode(service)
	if inode == "" {
		return ""
	}
	want := "socket:[" + inode + "]"
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		fds, _ := os.ReadDir(filepath.Join("/proc", p.Name(), "fd"))
		for _, fd := range fds {
			if l, _ := os.Readlink(filepath.Join("/proc", p.Name(), "fd", fd.Name())); l == want {
				comm, _ := os.ReadFile(filepath.Join("/proc", p.Name(), "comm"))
				return fmt.Sprintf("%s (pid %d)", strings.TrimSpace(string(comm)), pid)
			}
		}
	}
	return ""
}

// nameBound reports whether a socket of this network namespace is bound
// to the service's abstract name (cheap: /proc/net/unix only).
func nameBound(service string) bool { return boundInode(service) != "" }

// boundInode is the inode of the socket bound to the service's abstract
// name in this network namespace, "" if none (or no /proc).
func boundInode(service string) string {
	f, err := os.Open("/proc/net/unix")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// Num RefCount Protocol Flags Type St Inode Path; an abstract
		// name shows as @name, its NUL padding as @ too.
		fields := strings.Fields(sc.Text())
		if len(fields) == 8 && strings.TrimRight(fields[7], "@") == "@"+service {
			return fields[6]
		}
	}
	return ""
}
