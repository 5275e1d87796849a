package main

import (
	"fmt"
	"os"

	"github.com/corobus/corobus/config"
	"github.com/corobus/corobus/logsys"
)

// logsysFor builds the logging of one process of the node from corosync's
// logging keys. A bad logging key fails the process: a node that cannot
// log as configured should not run.
func (a *app) logsysFor(cfg *config.Config, layerName string) (*logsys.Logsys, error) {
	lc, err := logsys.ConfigFrom(cfg.String, logsys.Subsystems())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", describeFile(cfg), err)
	}
	var node uint32
	var name string
	if local, err := cfg.LocalNode(); err == nil {
		node, name = local.ID, local.Name
	}
	w := a.stderr
	if w == nil {
		w = os.Stderr
	}
	return logsys.New(lc, logsys.Options{Node: node, NodeName: name, Layer: layerName, Stderr: w})
}
