// Package pacemaker is the acceptance test of corobus as Pacemaker's
// cluster engine: Debian's pacemaker 2.1.5, unmodified, on three nodes of
// tests/netcluster (each a network and mount namespace of its own, a
// machine as Pacemaker knows one), run against corobus and, by the same
// code, against a real corosync 3 as the reference. The test is
// pacemaker_test.go; docs/pacemaker.md says how to run it and what it
// shows.
package pacemaker
