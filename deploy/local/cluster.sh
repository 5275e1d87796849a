#!/usr/bin/env bash
# The three-node local cluster: corobus nodes on this machine, private to
# this checkout (state directories and logs under deploy/local/state/, or
# $LOCALCLUSTER_STATE; the cluster key, made at the first `up`, is
# $STATE/authkey). As root, with ip(8) and network namespaces, each
# node runs in a network namespace of its own, joined to the others by a
# bridge in a namespace of the cluster's own — as on real machines, each
# node's IPC gateway serves the corosync clients of its namespace
# (`cluster.sh exec 2 corosync-cmapctl`). Elsewhere the nodes share the
# loopback address and only node 1 serves IPC (the others say so once).
#
#   cluster.sh up | down | status | exec NODE COMMAND... | mode
#
# LOCALCLUSTER_BIN: the binary (default bin/corobus, `task build` makes it);
# (LOCALCLUSTER_, not COROBUS_: those are configuration keys);
# LOCALCLUSTER_MODE=loopback forces the shared-address mode.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
state=${LOCALCLUSTER_STATE:-$here/state}
bin=${LOCALCLUSTER_BIN:-$root/bin/corobus}
nodes=(1 2 3)
# Namespace names are host-wide: tag them with this checkout's path, so
# that two checkouts run two clusters.
tag=$(printf %s "$state" | sha256sum | cut -c1-8)
ns() { echo "corobus-$tag-$1"; }

mode() {
	if [ -n "${LOCALCLUSTER_MODE:-}" ]; then echo "$LOCALCLUSTER_MODE"; return; fi
	if [ -f "$state/mode" ]; then cat "$state/mode"; return; fi
	if [ "$(id -u)" = 0 ] && command -v ip >/dev/null && ip netns list >/dev/null 2>&1; then
		echo netns
	else
		echo loopback
	fi
}

conf() { # conf NODE: the node's configuration file
	if [ "$(mode)" = netns ]; then echo "$here/netns.conf"; else echo "$here/node$1.conf"; fi
}

inside() { # inside NODE COMMAND...: run in the node's namespace
	local n=$1
	shift
	if [ "$(mode)" = netns ]; then ip netns exec "$(ns "node$n")" "$@"; else "$@"; fi
}

# without_inherited_fds runs a command with only descriptors 0-2 of this
# script's: every other one the script inherited is closed first.
without_inherited_fds() {
	(
		for fd in /proc/$BASHPID/fd/*; do
			fd=${fd##*/}
			if [ "$fd" -gt 2 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
		done
		"$@"
	)
}

# pid NODE: the node's `corobus up`, from the lock it holds on its state
# directory (first line: its pid), if that process runs on this directory.
pid() {
	local lock="$state/node$1/corobus.lock" p
	[ -f "$lock" ] || return 1
	p=$(head -1 "$lock")
	[ -n "$p" ] && { tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null | grep -q -- "system.state_dir=$state/node$1" || return 1
	echo "$p"
}

running() { pid "$1" >/dev/null; }

net_up() {
	local hub
	hub=$(ns hub)
	ip netns add "$hub"
	ip -n "$hub" link add br0 type bridge
	ip -n "$hub" link set br0 up
	for n in "${nodes[@]}"; do
		local nn
		nn=$(ns "node$n")
		ip netns add "$nn"
		ip -n "$hub" link add "n$n" type veth peer name eth0 netns "$nn"
		ip -n "$hub" link set "n$n" master br0 up
		ip -n "$nn" link set lo up
		ip -n "$nn" addr add "172.30.0.$n/24" dev eth0
		ip -n "$nn" link set eth0 up
	done
}

net_down() {
	for n in "${nodes[@]}"; do ip netns del "$(ns "node$n")" 2>/dev/null || true; done
	ip netns del "$(ns hub)" 2>/dev/null || true
}

up() {
	if [ ! -x "$bin" ]; then
		echo "no corobus binary at $bin: run 'task build' (or set LOCALCLUSTER_BIN)" >&2
		exit 1
	fi
	for n in "${nodes[@]}"; do
		if running "$n"; then
			echo "node $n already runs (pid $(pid "$n")); 'cluster.sh down' stops the cluster" >&2
			exit 1
		fi
	done
	# The state is private: node state directories, logs and the key.
	[ -d "$state" ] || install -d -m 0700 "$state"
	# The cluster key, made once and kept with the state (out of git): the
	# conf files turn totem crypto on, so the nodes' routes run TLS with
	# certificates and a password derived from it (docs/security.md).
	if [ ! -f "$state/authkey" ]; then
		"$bin" keygen -k "$state/authkey" >/dev/null
	fi
	local m
	m=$(mode)
	echo "$m" > "$state/mode"
	if [ "$m" = netns ]; then
		net_down
		net_up
	fi
	for n in "${nodes[@]}"; do
		mkdir -p "$state/node$n"
		# setsid: the node outlives this script and the terminal; its
		# pid is in the lock it takes on its state directory.
		# without_inherited_fds: a node that kept a descriptor its caller
		# had open (a flock's lock file, a pipe a CI runner waits on to
		# close) would hold that lock or that pipe for as long as it runs.
		without_inherited_fds inside "$n" setsid -f "$bin" up -c "$(conf "$n")" -o "totem.keyfile=$state/authkey" -o "system.state_dir=$state/node$n" \
			>>"$state/node$n.log" 2>&1 </dev/null
	done
	for n in "${nodes[@]}"; do
		local ok= seen=
		for _ in $(seq 300); do
			if running "$n"; then
				seen=1
			elif [ -n "$seen" ] || ! pgrep -f -- "system.state_dir=$state/node$n\$" >/dev/null; then
				echo "node $n is not running; the end of its log:" >&2
				tail -20 "$state/node$n.log" >&2
				exit 1
			fi
			# All three members, and serving corosync's clients: a node
			# whose members agree still loads its services and runs its
			# first synchronization, and a client then fails
			# (CS_ERR_LIBRARY) for a few seconds.
			st=$(inside "$n" "$bin" status -c "$(conf "$n")" -o "system.state_dir=$state/node$n" --json 2>/dev/null | tr -d ' \n\t') || true
			if grep -q '"members":\[1,2,3\]' <<<"$st" && grep -q '"serving":{"ready":true' <<<"$st"; then
				ok=1
				break
			fi
			sleep 0.2
		done
		if [ -z "$ok" ]; then
			echo "node $n did not see all three nodes and serve its clients within a minute; its last status:" >&2
			inside "$n" "$bin" status -c "$(conf "$n")" -o "system.state_dir=$state/node$n" >&2 || true
			echo "its log: $state/node$n.log" >&2
			exit 1
		fi
	done
	echo "three nodes up ($m mode); logs: $state/node*.log"
	if [ "$m" = netns ]; then
		echo "a node's clients: $0 exec 2 corosync-cmapctl   (or: ip netns exec $(ns node2) …)"
	else
		echo "corosync clients reach node 1 (the nodes share one network namespace)"
	fi
}

down() {
	# All at once: a cluster going down, not a node after another (the
	# last one would wait for a quorum that has gone).
	local pids=() p n
	for n in "${nodes[@]}"; do
		if p=$(pid "$n"); then
			kill -TERM "$p" 2>/dev/null && pids+=("$p")
		fi
	done
	for p in "${pids[@]}"; do
		for _ in $(seq 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		if kill -0 "$p" 2>/dev/null; then
			echo "pid $p did not stop in 30 s: killing it" >&2
			kill -KILL "$p" 2>/dev/null || true
		fi
	done
	if [ "$(mode)" = netns ]; then net_down; fi
	rm -f "$state/mode"
	echo "stopped; state kept in $state (rm -r it to start afresh)"
}

status() {
	for n in "${nodes[@]}"; do
		echo "== node $n"
		if running "$n"; then
			inside "$n" "$bin" status -c "$(conf "$n")" -o "system.state_dir=$state/node$n" || true
		else
			echo "not running"
		fi
	done
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
mode) mode ;;
exec)
	[ $# -ge 3 ] || { echo "usage: $0 exec NODE COMMAND..." >&2; exit 2; }
	n=$2
	shift 2
	inside "$n" "$@"
	;;
*)
	echo "usage: $0 up | down | status | exec NODE COMMAND... | mode" >&2
	exit 2
	;;
esac
