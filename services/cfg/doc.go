// Package cfg is corosync's configuration service (libcfg's "cfg" IPC
// service): the shutdown negotiation with registered clients, killing a
// node, reloading the configuration file on every node, a node's addresses
// and link status, reopening log files. Requests that concern other nodes
// travel over totem in total order, as corosync's exec messages do.
package cfg
