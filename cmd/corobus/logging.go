package main

import (
	"log/slog"

	"github.com/corobus/corobus/config"
)

// logger is the logger of one process of the node: corosync's logging keys
// decide where records go; subsys and layer tag each record.
func (a *app) logger(cfg *config.Config, subsys, layerName string) *slog.Logger {
	level := slog.LevelInfo
	if cfg.Bool("logging.debug", false) {
		level = slog.LevelDebug
	}
	return stderrLogger(a.stderr, level).With("subsys", subsys, "layer", layerName)
}
