package votequorum

import (
	"testing"

	"github.com/corobus/corobus/objdb"
	objdbclient "github.com/corobus/corobus/objdb/client"
)

// The objdb layer loading the file votequorum started from is not a
// change of its configuration; anything else is. On a three-node cluster's
// first start, 3 of 4 runs had a node refresh on those creations and write
// runtime.votequorum.atb_type, which corosync writes only on a real change.
func TestLoadEchoes(t *testing.T) {
	flat := map[string]string{
		"quorum.provider":        "corosync_votequorum",
		"quorum.expected_votes":  "0x3",
		"nodelist.node.0.nodeid": "1",
		"totem.token":            "1000",
	}
	val := func(typ objdb.Type, s string) *objdb.Value {
		v, err := objdb.ParseValue(typ, s)
		if err != nil {
			t.Fatal(err)
		}
		return &v
	}
	e := newLoadEchoes(flat, 1)
	for _, tc := range []struct {
		ch   objdbclient.Change
		echo bool
	}{
		{objdbclient.Change{Kind: "create", Key: "quorum.provider", New: val(objdb.String, "corosync_votequorum")}, true},
		{objdbclient.Change{Kind: "create", Key: "quorum.expected_votes", New: val(objdb.Uint32, "3")}, true},
		{objdbclient.Change{Kind: "create", Key: "nodelist.local_node_pos", New: val(objdb.Uint32, "1")}, true},
		// A key's second event is a change, whatever it is.
		{objdbclient.Change{Kind: "create", Key: "quorum.provider", New: val(objdb.String, "corosync_votequorum")}, false},
		// Another value than the file's, another kind, a key the file
		// does not have, a key outside quorum.* and nodelist.*.
		{objdbclient.Change{Kind: "create", Key: "nodelist.node.0.nodeid", New: val(objdb.Uint32, "4")}, false},
		{objdbclient.Change{Kind: "delete", Key: "quorum.two_node", Old: val(objdb.Uint8, "1")}, false},
		{objdbclient.Change{Kind: "create", Key: "quorum.two_node", New: val(objdb.Uint8, "1")}, false},
		{objdbclient.Change{Kind: "create", Key: "totem.token", New: val(objdb.Uint32, "1000")}, false},
	} {
		if got := e.echo(tc.ch); got != tc.echo {
			t.Errorf("echo(%s %s = %v) = %v, want %v", tc.ch.Kind, tc.ch.Key, tc.ch.New, got, tc.echo)
		}
	}
}
