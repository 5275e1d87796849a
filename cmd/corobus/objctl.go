package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/corobus/corobus/objdb"
	"github.com/corobus/corobus/objdb/client"
)

// runObjctl is corosync 1.x's corosync-objctl view of the same keys: the
// object tree, `object.key=value` lines.
func runObjctl(ctx context.Context, a *app, args []string) error {
	var nf nodeFlags
	var children bool
	fs := newFlagSet(a, "objctl", "[-c FILE | --bus URL] [-l] [OBJECT...]",
		"Show objdb as corosync 1.x's object tree: every key under OBJECT (or all) as\n"+
			"object.key=value lines, or with -l the child objects and keys directly under OBJECT.")
	nf.register(fs, true)
	fs.BoolVar(&children, "l", false, "list the child objects and keys of OBJECT instead")
	objects, err := parseInterspersed(a, fs, args)
	if err != nil {
		return err
	}
	nc, err := a.connect(nf, "corobus-objctl", 0)
	if err != nil {
		return err
	}
	defer nc.Close()
	c := client.New(nc.nc, nc.subjects, nc.node)
	if len(objects) == 0 {
		objects = []string{""}
	}
	for _, obj := range objects {
		prefix := obj
		if prefix != "" && !strings.HasSuffix(prefix, ".") {
			prefix += "."
		}
		list, err := c.List(ctx, prefix)
		if err != nil {
			return fmt.Errorf("listing %s: %s", obj, csReason(err))
		}
		entries := make([]objdb.Entry, len(list))
		for i, e := range list {
			t, _ := objdb.ParseType(e.Type)
			entries[i] = objdb.Entry{Key: e.Key, Value: objdb.Value{Type: t, Data: e.Data}, Scope: e.Scope}
		}
		if children {
			objs, keys := objdb.Children(entries, strings.TrimSuffix(obj, "."))
			for _, o := range objs {
				fmt.Fprintf(a.stdout, "%s (object)\n", o)
			}
			for _, k := range keys {
				fmt.Fprintf(a.stdout, "%s=%s\n", k.Key[strings.LastIndexByte(k.Key, '.')+1:], k.Value)
			}
			continue
		}
		for _, e := range entries {
			fmt.Fprintf(a.stdout, "%s=%s\n", e.Key, e.Value)
		}
	}
	return nil
}
