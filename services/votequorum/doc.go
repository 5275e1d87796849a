// Package votequorum is corosync's vote quorum provider (libvotequorum's
// "votequorum" IPC service): votes per node, expected votes, and every
// option of votequorum(5) — two_node, wait_for_all, last_man_standing,
// auto_tie_breaker, allow_downscale, expected_votes_tracking — with the
// quorum device calls corosync-qdevice uses. Every node's instance
// multicasts its node's votes in total order over totem and recomputes
// quorum in each synchronization round, so that the members of a view
// agree; the result is published for the quorum service and any observer
// on <prefix>.quorum.<node>.state.
package votequorum
