package objdb

import (
	"reflect"
	"testing"
)

func TestChildren(t *testing.T) {
	var entries []Entry
	for _, k := range []string{"totem.token", "totem.interface.0.bindnetaddr", "totem.interface.1.mcastport", "logging.debug", "quorum.provider"} {
		entries = append(entries, Entry{Key: k})
	}
	objs, keys := Children(entries, "")
	if !reflect.DeepEqual(objs, []string{"logging", "quorum", "totem"}) || len(keys) != 0 {
		t.Errorf("root: %v %v", objs, keys)
	}
	objs, keys = Children(entries, "totem")
	if !reflect.DeepEqual(objs, []string{"interface"}) || len(keys) != 1 || keys[0].Key != "totem.token" {
		t.Errorf("totem: %v %v", objs, keys)
	}
	objs, _ = Children(entries, "totem.interface")
	if !reflect.DeepEqual(objs, []string{"0", "1"}) {
		t.Errorf("totem.interface: %v", objs)
	}
}
