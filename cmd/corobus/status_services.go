package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/nats-io/nats.go"

	"github.com/corobus/corobus/bus"
	"github.com/corobus/corobus/services/svcmgr"
)

// ServiceStatus is one loaded service in `corobus status --json`.
type ServiceStatus = svcmgr.ServiceInfo

// servicesStatus asks node's service manager for the loaded services (for
// NodeStatus.Services); nil when no service manager answers.
func servicesStatus(nc *nats.Conn, subjects bus.Subjects, node uint32) []ServiceStatus {
	list, err := fetchServices(context.Background(), nc, subjects, node)
	if err != nil {
		return nil
	}
	return list
}

// printServices renders the services section of `corobus status` and
// `corobus svc list`:
//
//	Services:
//	  N  SERVICE  VER  SERVING  PIDS   RESTARTS  SUBJECT
//	  0  example  1    1        12345  0         corobus.c.svc.node1.example.1
func printServices(w io.Writer, list []svcmgr.ServiceInfo) {
	fmt.Fprintln(w, "Services:")
	if len(list) == 0 {
		fmt.Fprintln(w, "  none loaded (or no service manager answering)")
		return
	}
	var loading []svcmgr.ServiceInfo
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  N\tSERVICE\tVER\tSERVING\tPIDS\tRESTARTS\tSUBJECT")
	for _, s := range list {
		if s.State == "loading" {
			loading = append(loading, s)
			continue
		}
		pids := make([]string, len(s.PIDs))
		for i, p := range s.PIDs {
			pids[i] = fmt.Sprint(p)
		}
		fmt.Fprintf(tw, "  %d\t%s\t%d\t%d\t%s\t%d\t%s\n", s.Index, s.Name, s.Version, s.Serving, orDash(strings.Join(pids, ",")), s.Restarts, orDash(s.Target))
	}
	_ = tw.Flush()
	// A service the node should run and does not (yet): said, with why.
	for _, s := range loading {
		why := s.Error
		if why == "" {
			why = "first attempt under way"
		}
		fmt.Fprintf(w, "  NOT LOADED %s %d (%d attempts, retrying): %s\n", s.Name, s.Version, s.Attempts, why)
	}
}
