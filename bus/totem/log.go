package totem

// ringLog is the ordered log of one ring as this node knows it: positions
// base+1 … base+len(ents). Entries at or below base were delivered by every
// member (stable) and are gone. An entry with a zero id is a hole: a
// position this node has not learnt the order of yet.
type ringLog struct {
	ring      RingID
	members   []uint32
	base      uint64
	ents      []entry
	delivered uint64
}

func newRingLog(ring RingID, members []uint32) *ringLog {
	return &ringLog{ring: ring, members: members}
}

// highest is the highest position the log covers (ordered or a hole).
func (l *ringLog) highest() uint64 { return l.base + uint64(len(l.ents)) }

// at returns the entry at pos, nil when outside the log.
func (l *ringLog) at(pos uint64) *entry {
	if pos <= l.base || pos > l.highest() {
		return nil
	}
	return &l.ents[pos-l.base-1]
}

// ordered reports whether the log has pos's order.
func (e *entry) ordered() bool { return e != nil && e.id != (MsgID{}) }

// slot extends the log with holes up to pos and returns pos's entry; nil if
// pos is already trimmed.
func (l *ringLog) slot(pos uint64) *entry {
	if pos <= l.base {
		return nil
	}
	for l.highest() < pos {
		l.ents = append(l.ents, entry{})
	}
	return &l.ents[pos-l.base-1]
}

// ready reports the next deliverable entry, if any.
func (l *ringLog) ready() *entry {
	e := l.at(l.delivered + 1)
	if e.ordered() && e.have {
		return e
	}
	return nil
}

// held lists the positions above delivered that this node has, order and
// payload both.
func (l *ringLog) held() []uint64 {
	var out []uint64
	for pos := l.delivered + 1; pos <= l.highest(); pos++ {
		if e := l.at(pos); e.ordered() && e.have {
			out = append(out, pos)
		}
	}
	return out
}

// trim drops positions up to stable (never beyond what this node
// delivered) and calls drop for each dropped entry.
func (l *ringLog) trim(stable uint64, drop func(*entry)) {
	stable = min(stable, l.delivered)
	if stable <= l.base {
		return
	}
	n := int(stable - l.base)
	for i := range n {
		if drop != nil {
			drop(&l.ents[i])
		}
		l.ents[i] = entry{} // release the payload now
	}
	l.ents = l.ents[n:]
	l.base = stable
	// Reslicing keeps the old array alive; copy once it is mostly dead so
	// that a long-lived ring does not grow without bound.
	if cap(l.ents) > 1024 && len(l.ents) < cap(l.ents)/4 {
		l.ents = append(make([]entry, 0, 2*len(l.ents)+64), l.ents...)
	}
}
