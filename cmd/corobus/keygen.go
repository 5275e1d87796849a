package main

import (
	"context"
	"fmt"
	"os"

	"github.com/corobus/corobus/bus"
)

// runKeygen is corosync-keygen: the same flags, the same file (raw random
// bytes, mode 0400), so that one key serves corosync and corobus alike.
func runKeygen(_ context.Context, a *app, args []string) error {
	var keyFile, randomFile string
	var size int
	var lessSecure bool
	fs := newFlagSet(a, "keygen", "[-k FILE] [-s SIZE] [-r RANDOMFILE]",
		"Write a cluster key as corosync-keygen does: SIZE random bytes (default 256, between\n"+
			"128 and 4096) into FILE (default /etc/corosync/authkey), mode 0400. With\n"+
			"totem.crypto_cipher / crypto_hash set, corobus derives its route certificates and route\n"+
			"password from this key (docs/security.md); copy the same file to every node.")
	fs.StringVar(&keyFile, "k", bus.DefaultAuthKeyFile, "write the key to this `file`")
	fs.StringVar(&keyFile, "key-file", bus.DefaultAuthKeyFile, "same as -k")
	fs.IntVar(&size, "s", bus.AuthKeyDefaultSize, "key length in `bytes`")
	fs.IntVar(&size, "size", bus.AuthKeyDefaultSize, "same as -s")
	fs.StringVar(&randomFile, "r", "/dev/urandom", "random number source `file`")
	fs.StringVar(&randomFile, "random-file", "/dev/urandom", "same as -r")
	fs.BoolVar(&lessSecure, "l", false, "not used, kept for corosync-keygen compatibility")
	if err := parse(a, fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	if err := bus.CheckAuthKeySize(size); err != nil {
		return usagef("%v", err)
	}
	rnd, err := os.Open(randomFile)
	if err != nil {
		return fmt.Errorf("failed to open random source: %w", err)
	}
	defer rnd.Close()
	fmt.Fprintln(a.stdout, "Corosync Cluster Engine Authentication key generator (corobus).")
	fmt.Fprintf(a.stdout, "Gathering %d bits for key from %s.\n", size*8, randomFile)
	if err := bus.WriteAuthKey(keyFile, size, rnd); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "Writing corosync key to %s.\n", keyFile)
	return nil
}
