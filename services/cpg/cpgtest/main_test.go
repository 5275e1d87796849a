package cpgtest

import (
	"os"
	"testing"

	"github.com/corobus/corobus/tests/netcluster"
)

// TestMain runs the package's tests with one corobus build shared by all
// of them (netcluster.Build). Its parallel tests run go test's default
// two at a time: with four, TestFeatures' three corobus cases ran at once
// and, in a full go test ./... beside objdb, cpgfeatures with cpg in its
// own process got CS_ERR_TRY_AGAIN for a cpg_leave before any join (the
// node's services still registering; docs/testing.md). The gateway now
// lets no client in before the node's start-up is done
// (TestEarlyClientWaitsForTheStartup).
func TestMain(m *testing.M) { os.Exit(netcluster.Main(m)) }
