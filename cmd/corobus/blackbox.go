package main

import (
	"context"
	"fmt"
	"time"
)

// runBlackbox dumps the flight recorders of a node's layer processes, the
// way corosync-blackbox dumps corosync's.
func runBlackbox(_ context.Context, a *app, args []string) error {
	var nf nodeFlags
	var node uint
	var wait time.Duration
	fs := newFlagSet(a, "blackbox", "[-c FILE | --bus URL] [--node ID]",
		"Dump the flight recorder of every layer process of a node: the last records of\n"+
			"every priority, including debug records that were not printed.")
	nf.register(fs, true)
	fs.UintVar(&node, "node", 0, "node `id` (default: the configured local node)")
	fs.DurationVar(&wait, "wait", 500*time.Millisecond, "how long to collect answers")
	if err := parse(a, fs, args); err != nil {
		return err
	}
	c, err := a.connect(nf, "corobus-blackbox", node)
	if err != nil {
		return err
	}
	defer c.Close()
	nc, subjects, id := c.nc, c.subjects, c.node
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return fmt.Errorf("subscribing for answers: %w", err)
	}
	if err := nc.PublishRequest(subjects.Blackbox(id), inbox, nil); err != nil {
		return fmt.Errorf("asking for the flight recorders: %w", err)
	}
	answers := 0
	deadline := time.Now().Add(wait)
	for {
		m, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			break
		}
		answers++
		if _, err := a.stdout.Write(m.Data); err != nil {
			return err
		}
	}
	if answers == 0 {
		return fmt.Errorf("no layer process of node %d answered", id)
	}
	return nil
}
