package bus

import "strconv"

// ObjdbChanged is where every change of an objdb key is announced; the
// key's tokens follow (objdb.EncodeKey), so `…objdb.changed.totem.>`
// tracks a prefix.
func (s Subjects) ObjdbChanged(encodedKey string) string {
	return s.Join("objdb", "changed", encodedKey)
}

// ObjdbAPI is the request subject of one objdb operation for the view of
// node: served by that node's objdb processes in a queue group.
func (s Subjects) ObjdbAPI(node uint32, op string) string {
	return s.Join("objdb", strconv.FormatUint(uint64(node), 10), "api", op)
}
