package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/corobus/corobus/config/keys"
	"github.com/corobus/corobus/logsys"
)

func runConfig(_ context.Context, a *app, args []string) error {
	var nf nodeFlags
	var listKeys, markdown bool
	fs := newFlagSet(a, "config", "[-c FILE] [-o key=value] [--keys [--markdown]]",
		"Load and check a configuration as a node would, then print every key with its value\n"+
			"(corosync -t's check, and the keys objdb will hold). With --keys, print the schema\n"+
			"of known keys instead.")
	nf.register(fs, false)
	fs.BoolVar(&listKeys, "keys", false, "print every known key with its type and meaning")
	fs.BoolVar(&markdown, "markdown", false, "with --keys: as the Markdown table of docs/configuration.md")
	if err := parse(a, fs, args); err != nil {
		return err
	}
	if listKeys {
		writeKeys(a.stdout, markdown)
		return nil
	}
	cfg, err := nf.load(a)
	if err != nil {
		return err
	}
	if _, err := cfg.LocalNode(); err != nil {
		return err
	}
	// What up refuses before it starts anything (timings, crypto), but
	// the key file, which the user checking may not be allowed to read.
	if err := checkTotem(cfg); err != nil {
		return err
	}
	// And the log file up opens first, as corosync -t opens it: until 3
	// Dec a logfile in a directory that does not exist (pcs's
	// /var/log/cluster/) passed here and stopped up.
	lc, err := logsys.ConfigFrom(cfg.String, logsys.Subsystems())
	if err != nil {
		return fmt.Errorf("%s: %w", describeFile(cfg), err)
	}
	if err := lc.Check(); err != nil {
		return cfg.AtKey("logging.logfile", err)
	}
	flat := cfg.Flat()
	for _, k := range slices.Sorted(maps.Keys(flat)) {
		typ := keys.Str
		if kk, ok := keys.Lookup(k); ok {
			typ = kk.Type
		}
		fmt.Fprintf(a.stdout, "%s (%s) = %s\n", k, typ, flat[k])
	}
	return nil
}

// writeKeys prints the schema; the Markdown form is what
// docs/configuration.md embeds (a test keeps the two in step).
func writeKeys(w io.Writer, markdown bool) {
	if markdown {
		fmt.Fprintln(w, "| key | type | default | read-only | meaning |")
		fmt.Fprintln(w, "|---|---|---|---|---|")
	}
	for _, k := range keys.All() {
		ro := ""
		if k.ReadOnly {
			ro = "yes"
		}
		doc := k.Doc
		if k.Corobus {
			doc = "corobus: " + doc
		}
		if markdown {
			fmt.Fprintf(w, "| `%s` | %s | %s | %s | %s |\n", k.Pattern, k.Type, codeOrEmpty(k.Default), ro, strings.ReplaceAll(doc, "|", "\\|"))
			continue
		}
		fmt.Fprintf(w, "%-45s %-4s %-3s %s\n", k.Pattern, k.Type, ro, doc)
	}
}

func codeOrEmpty(s string) string {
	if s == "" {
		return ""
	}
	return "`" + s + "`"
}
