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

// ObjdbKeys is a subject of node's keeper, the bus-process authority over
// the node's own keys: "write" (the node's Stores send their node-key
// writes), "feed" (the keeper publishes every applied write, in order),
// "sync" (request/reply: records or a snapshot for a Store catching up).
func (s Subjects) ObjdbKeys(node uint32, what string) string {
	return s.Join("objdb", strconv.FormatUint(uint64(node), 10), "keys", what)
}

// ObjdbCopies is asked, scatter-gather, for the state of every watched
// copy of node's view (each objdb.Store answers for itself).
func (s Subjects) ObjdbCopies(node uint32) string {
	return s.Join("objdb", strconv.FormatUint(uint64(node), 10), "copies")
}

// ObjdbInternalAPI is the request subject of one objdb write operation that
// may change read-only keys, for the layers that maintain them: served by
// node's objdb processes, granted only to those layers.
func (s Subjects) ObjdbInternalAPI(node uint32, op string) string {
	return s.Join("objdb", strconv.FormatUint(uint64(node), 10), "internal", op)
}
