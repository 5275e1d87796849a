// Package keys is the schema of the configuration keys corobus knows:
// corosync 3.1's (corosync.conf(5), votequorum(5), cmap_keys(7)) with the
// cmap type corosync stores each one as, whether corosync's cmap refuses
// writes to it, and corobus's own few keys. The configuration loader
// rejects a key that is not here (a typo), objdb stores each key with its
// type, and docs/configuration.md is checked against it.
package keys

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Type is a cmap value type, spelled as corosync-cmapctl prints it.
type Type string

// The cmap types.
const (
	U8  Type = "u8"
	U16 Type = "u16"
	U32 Type = "u32"
	U64 Type = "u64"
	I8  Type = "i8"
	I16 Type = "i16"
	I32 Type = "i32"
	I64 Type = "i64"
	Flt Type = "flt"
	Dbl Type = "dbl"
	Str Type = "str"
	Bin Type = "bin"
)

// Key describes one key or family of keys.
type Key struct {
	// Pattern is the key's name; a "*" token stands for any one token
	// (a node index, a subsystem name, a uid).
	Pattern string
	Type    Type
	// ReadOnly keys refuse writes through cmap, as corosync's do.
	ReadOnly bool
	// Default is the value assumed when the key is absent ("" if none).
	Default string
	// Corobus marks keys corosync does not have.
	Corobus bool
	// Secret keys hold key material or credentials: objdb does not load
	// them, so no cmap client, subscriber or other node ever sees them.
	Secret bool
	// Values, when set, are the only spellings corosync accepts for the
	// key in corosync.conf: anything else is a mistake in the file.
	Values []string
	// Check, when set, is what else the key's value must satisfy (a
	// spelling Values cannot list: system.priority's numbers).
	Check func(value string) error
	Doc   string
}

// table is every key. Sections in corosync.conf(5) order.
func table() []Key {
	// What corosync's logconfig.c accepts for a mode (to_syslog …), a
	// format switch (fileline …) and a priority; libqb's facility names;
	// and every boolean spelling Config.Bool reads, for corobus's keys.
	yesNo := []string{"yes", "no", "on", "off"}
	onOff := []string{"on", "off"}
	boolean := []string{"yes", "no", "on", "off", "true", "false", "1", "0"}
	priorities := []string{"emerg", "alert", "crit", "err", "error", "warning", "notice", "info", "debug"}
	facilities := []string{"daemon", "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
		"kern", "user", "mail", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp"}
	return []Key{
		// totem
		{Pattern: "totem.version", Type: U32, ReadOnly: true, Default: "2", Values: []string{"2"}, Doc: "configuration version; only 2 is valid"},
		{Pattern: "totem.cluster_name", Type: Str, ReadOnly: true, Default: "corobus", Doc: "cluster name; corobus's subject prefix is corobus.<cluster_name>"},
		// pcs cluster setup writes a cluster_uuid into the totem section of
		// every cluster it makes (since pcs 0.11.3, 2022; Pacemaker 2.1's
		// "Clusters from Scratch" shows one): corosync keeps it as a string
		// and reads it nowhere, so refusing it refuses every such file.
		{Pattern: "totem.cluster_uuid", Type: Str, Doc: "pcs: the cluster's UUID, which pcs cluster setup writes (accepted, unused)"},
		{Pattern: "totem.nodeid", Type: U32, ReadOnly: true, Doc: "this node's id, for nodes that cannot find themselves from ring0_addr (several nodes on one address)"},
		{Pattern: "totem.clear_node_high_bit", Type: Str, ReadOnly: true, Doc: "corosync: clear the high bit of automatically chosen node ids (accepted, unused)"},
		{Pattern: "totem.crypto_model", Type: Str, Values: []string{"nss", "openssl", "gcrypt"}, ReadOnly: true, Doc: "knet's crypto library: nss (default), openssl or gcrypt (checked, otherwise unused: routes use Go's TLS)"},
		{Pattern: "totem.crypto_cipher", Type: Str, Values: []string{"none", "aes256", "aes192", "aes128"}, ReadOnly: true, Doc: "none (default), aes256, aes192 or aes128; other than none (or crypto_hash other than none) turns route protection on: TLS 1.3 and a route password derived from the key (docs/security.md)"},
		{Pattern: "totem.crypto_hash", Type: Str, Values: []string{"none", "md5", "sha1", "sha256", "sha384", "sha512"}, ReadOnly: true, Doc: "none (default), md5, sha1, sha256, sha384 or sha512; other than none turns route protection on, as crypto_cipher does"},
		{Pattern: "totem.secauth", Type: Str, ReadOnly: true, Doc: "corosync 1/2 crypto switch: on implies crypto_cipher aes256 and crypto_hash sha256 unless they are set"},
		{Pattern: "totem.keyfile", Type: Str, ReadOnly: true, Doc: "the cluster key (corosync-keygen, corobus keygen) when crypto is on; default /etc/corosync/authkey unless totem.key is set"},
		{Pattern: "totem.key", Type: Str, ReadOnly: true, Secret: true, Doc: "the cluster key inline (128 to 4096 bytes), used when totem.keyfile is not set; not recommended; never loaded into objdb"},
		{Pattern: "totem.link_mode", Type: Str, Values: []string{"passive", "active", "rr"}, Doc: "corosync knet: passive, active or rr (accepted, unused)"},
		{Pattern: "totem.netmtu", Type: U32, ReadOnly: true, Doc: "corosync: network MTU (accepted, unused)"},
		{Pattern: "totem.transport", Type: Str, Values: []string{"knet", "udp", "udpu"}, ReadOnly: true, Doc: "corosync: knet, udp or udpu; corobus always uses its NATS routes"},
		{Pattern: "totem.config_version", Type: U64, Doc: "corosync: version of the configuration (0, unset, is never compared); a node whose version is lower than another member's in its first view with other nodes logs `Received config version (N) is different than my config version (M)! Exiting` and stops with status 0, as corosync does (docs/totem.md, \"Configuration version\"); each node's heartbeats carry it, and every node lists it as `runtime.members.<id>.config_version`"},
		{Pattern: "totem.ip_version", Type: Str, Values: []string{"ipv4", "ipv6", "ipv4-6", "ipv6-4"}, ReadOnly: true, Doc: "ipv4, ipv6, ipv4-6 or ipv6-4: the family corosync resolves a host name in ringN_addr to (checked, otherwise unused: corobus takes the addresses the host's resolver gives for the name, of either family)"},
		{Pattern: "totem.ip_dscp", Type: U8, ReadOnly: true, Doc: "corosync: DSCP of totem traffic (accepted, unused)"},
		{Pattern: "totem.threads", Type: U32, ReadOnly: true, Doc: "corosync 1: worker threads (accepted, unused)"},
		{Pattern: "totem.token", Type: U32, Default: "1000", Doc: "ms without a heartbeat after which a node is declared gone"},
		{Pattern: "totem.token_warning", Type: U32, Doc: "corosync: percent of token after which a late token is logged (accepted, unused)"},
		{Pattern: "totem.token_coefficient", Type: U32, Doc: "corosync: ms added to token per node beyond two (accepted, unused: totem.token is the timeout whatever the number of nodes)"},
		{Pattern: "totem.token_retransmit", Type: U32, Doc: "corosync: ms before the token is retransmitted (accepted, unused)"},
		{Pattern: "totem.hold", Type: U32, Doc: "corosync: token hold time (accepted, unused)"},
		{Pattern: "totem.token_retransmits_before_loss_const", Type: U32, Doc: "corosync: retransmits before loss (accepted, unused)"},
		{Pattern: "totem.join", Type: U32, Default: "50", Doc: "ms to wait for join messages in membership"},
		{Pattern: "totem.send_join", Type: U32, Doc: "corosync: join send delay (accepted, unused)"},
		{Pattern: "totem.consensus", Type: U32, Doc: "ms to reach consensus before starting a new membership round (default: 1.2 × totem.token, as corosync derives it)"},
		{Pattern: "totem.merge", Type: U32, Doc: "corosync: ms between checks for partitions to merge (accepted, unused)"},
		{Pattern: "totem.downcheck", Type: U32, Doc: "corosync: interface down check (accepted, unused)"},
		{Pattern: "totem.fail_recv_const", Type: U32, Doc: "corosync: rotations without messages before failure (accepted, unused)"},
		{Pattern: "totem.seqno_unchanged_const", Type: U32, Doc: "corosync (accepted, unused)"},
		{Pattern: "totem.heartbeat_failures_allowed", Type: U32, Doc: "corosync (accepted, unused)"},
		{Pattern: "totem.max_network_delay", Type: U32, Doc: "corosync (accepted, unused)"},
		{Pattern: "totem.window_size", Type: U32, Doc: "corosync: messages per token rotation (accepted, unused)"},
		{Pattern: "totem.max_messages", Type: U32, Doc: "corosync: messages per node per rotation (accepted, unused)"},
		{Pattern: "totem.miss_count_const", Type: U32, Doc: "corosync (accepted, unused)"},
		{Pattern: "totem.knet_pmtud_interval", Type: U32, Doc: "knet (accepted, unused)"},
		{Pattern: "totem.knet_mtu", Type: U32, Doc: "knet (accepted, unused)"},
		{Pattern: "totem.knet_compression_model", Type: Str, Doc: "knet (accepted, unused)"},
		{Pattern: "totem.knet_compression_threshold", Type: U32, Doc: "knet (accepted, unused)"},
		{Pattern: "totem.knet_compression_level", Type: I32, Doc: "knet (accepted, unused)"},
		{Pattern: "totem.block_unlisted_ips", Type: Str, Doc: "knet: drop traffic from addresses not in the nodelist (accepted, unused)"},
		{Pattern: "totem.cancel_token_hold_on_retransmit", Type: Str, Doc: "corosync (accepted, unused)"},
		{Pattern: "totem.rrp_mode", Type: Str, Doc: "corosync 2 (accepted, unused)"},
		{Pattern: "totem.rrp_problem_count_timeout", Type: U32, Doc: "corosync 2: redundant ring tuning (accepted, unused)"},
		{Pattern: "totem.rrp_problem_count_threshold", Type: U32, Doc: "corosync 2: redundant ring tuning (accepted, unused)"},
		{Pattern: "totem.rrp_problem_count_mcast_threshold", Type: U32, Doc: "corosync 2: redundant ring tuning (accepted, unused)"},
		{Pattern: "totem.rrp_token_expired_timeout", Type: U32, Doc: "corosync 2: redundant ring tuning (accepted, unused)"},
		{Pattern: "totem.rrp_autorecovery_check_timeout", Type: U32, Doc: "corosync 2: redundant ring tuning (accepted, unused)"},
		{Pattern: "totem.vsftype", Type: Str, Doc: "corosync 1.x: virtual synchrony filter, ykd or none; still in many files written for it (accepted, unused)"},
		{Pattern: "totem.interface.*.linknumber", Type: U8, Doc: "link (ring) number of an interface section"},
		{Pattern: "totem.interface.*.ringnumber", Type: U8, Doc: "corosync 2 name of linknumber"},
		{Pattern: "totem.interface.*.bindnetaddr", Type: Str, Check: checkAddress, Doc: "UDP transports: address to bind (accepted, unused)"},
		{Pattern: "totem.interface.*.broadcast", Type: Str, Doc: "UDP transports: use broadcast (accepted, unused)"},
		{Pattern: "totem.interface.*.mcastaddr", Type: Str, Check: checkAddress, Doc: "UDP transports: multicast address (accepted, unused)"},
		{Pattern: "totem.interface.*.mcastport", Type: U16, Doc: "UDP port of the link (accepted, unused)"},
		{Pattern: "totem.interface.*.ttl", Type: U8, Doc: "UDP multicast TTL (accepted, unused)"},
		{Pattern: "totem.interface.*.knet_link_priority", Type: U8, Doc: "knet link priority (accepted, unused)"},
		{Pattern: "totem.interface.*.knet_ping_interval", Type: U32, Doc: "knet ping interval (accepted, unused)"},
		{Pattern: "totem.interface.*.knet_ping_timeout", Type: U32, Doc: "knet ping timeout (accepted, unused)"},
		{Pattern: "totem.interface.*.knet_ping_precision", Type: U32, Doc: "knet ping precision (accepted, unused)"},
		{Pattern: "totem.interface.*.knet_pong_count", Type: U32, Doc: "knet pong count (accepted, unused)"},
		{Pattern: "totem.interface.*.knet_transport", Type: Str, Doc: "knet transport: udp or sctp"},

		// logging
		{Pattern: "logging.timestamp", Type: Str, Values: []string{"on", "off", "hires"}, Default: "on", Doc: "on, off or hires: time stamps on log lines"},
		{Pattern: "logging.fileline", Type: Str, Values: onOff, Default: "off", Doc: "on: print the source file and line (accepted, unused)"},
		{Pattern: "logging.function_name", Type: Str, Values: onOff, Default: "off", Doc: "on: print the function name (accepted, unused)"},
		{Pattern: "logging.blackbox", Type: Str, Values: onOff, Default: "on", Doc: "on: keep the flight recorder (accepted, unused: every process keeps one, corobus blackbox)"},
		{Pattern: "logging.to_stderr", Type: Str, Values: yesNo, Default: "yes", Doc: "log to standard error"},
		{Pattern: "logging.to_logfile", Type: Str, Values: yesNo, Default: "no", Doc: "log to logging.logfile"},
		{Pattern: "logging.to_syslog", Type: Str, Values: yesNo, Default: "no", Doc: "log to syslog through logging.syslog_socket, as ident corobus[pid] (corosync's default is yes)"},
		{Pattern: "logging.logfile", Type: Str, Doc: "path of the log file"},
		{Pattern: "logging.logfile_priority", Type: Str, Values: priorities, Default: "info", Doc: "lowest priority written to the log file; with debug on, debug records are written"},
		{Pattern: "logging.syslog_facility", Type: Str, Values: facilities, Default: "daemon", Doc: "syslog facility of the records sent to syslog"},
		{Pattern: "logging.syslog_priority", Type: Str, Values: priorities, Default: "info", Doc: "lowest priority sent to syslog; with debug on, debug records are sent (as info, trace as debug, as corosync sends them)"},
		{Pattern: "logging.syslog_socket", Type: Str, Corobus: true, Doc: "the syslog daemon's unix datagram socket; /dev/log when unset"},
		{Pattern: "logging.debug", Type: Str, Values: []string{"on", "off", "trace"}, Default: "off", Doc: "on, off or trace"},
		{Pattern: "logging.logger_subsys.*.subsys", Type: Str, Doc: "the subsystem a logger_subsys section configures"},
		{Pattern: "logging.logger_subsys.*.debug", Type: Str, Values: []string{"on", "off", "trace"}, Doc: "debug for one subsystem: on, off or trace"},
		{Pattern: "logging.logger_subsys.*.to_stderr", Type: Str, Values: yesNo, Doc: "override of logging.to_stderr for this subsystem"},
		{Pattern: "logging.logger_subsys.*.to_logfile", Type: Str, Values: yesNo, Doc: "override of logging.to_logfile for this subsystem (the file is logging.logfile)"},
		{Pattern: "logging.logger_subsys.*.to_syslog", Type: Str, Values: yesNo, Doc: "override of logging.to_syslog for this subsystem"},
		{Pattern: "logging.logger_subsys.*.logfile", Type: Str, Doc: "per-subsystem override (accepted, unused: one log file, and one format, for every subsystem)"},
		{Pattern: "logging.logger_subsys.*.logfile_priority", Type: Str, Values: priorities, Doc: "override of logging.logfile_priority for this subsystem"},
		{Pattern: "logging.logger_subsys.*.syslog_facility", Type: Str, Values: facilities, Doc: "override of logging.syslog_facility for this subsystem"},
		{Pattern: "logging.logger_subsys.*.syslog_priority", Type: Str, Values: priorities, Doc: "override of logging.syslog_priority for this subsystem"},
		{Pattern: "logging.logger_subsys.*.timestamp", Type: Str, Values: []string{"on", "off", "hires"}, Doc: "per-subsystem override (accepted, unused: one log file, and one format, for every subsystem)"},
		{Pattern: "logging.logger_subsys.*.fileline", Type: Str, Values: onOff, Doc: "per-subsystem override (accepted, unused: one log file, and one format, for every subsystem)"},
		{Pattern: "logging.logger_subsys.*.function_name", Type: Str, Values: onOff, Doc: "per-subsystem override (accepted, unused: one log file, and one format, for every subsystem)"},

		// quorum (votequorum(5))
		{Pattern: "quorum.provider", Type: Str, Values: []string{"corosync_votequorum"}, Doc: "quorum provider: corosync_votequorum; unset, quorum is not configured and every node is quorate"},
		{Pattern: "quorum.expected_votes", Type: U32, Doc: "expected votes when there is no nodelist"},
		{Pattern: "quorum.votes", Type: U32, Doc: "this node's votes when there is no nodelist"},
		{Pattern: "quorum.two_node", Type: U8, Doc: "1: a two-node cluster is quorate with one node"},
		{Pattern: "quorum.wait_for_all", Type: U8, Doc: "1: quorate only once all nodes were seen together"},
		{Pattern: "quorum.last_man_standing", Type: U8, Doc: "1: recompute expected votes as nodes leave"},
		{Pattern: "quorum.last_man_standing_window", Type: U32, Doc: "ms to wait before recomputing"},
		{Pattern: "quorum.auto_tie_breaker", Type: U8, Doc: "1: break 50/50 splits by node id"},
		{Pattern: "quorum.auto_tie_breaker_node", Type: Str, Doc: "lowest, highest or a list of node ids"},
		{Pattern: "quorum.allow_downscale", Type: U8, Doc: "1: lower expected votes on clean leaves"},
		{Pattern: "quorum.expected_votes_tracking", Type: U8, Doc: "1: remember the highest expected votes"},
		{Pattern: "quorum.leaving_timeout", Type: U32, Doc: "ms a leaving node is waited for (accepted, unused)"},
		{Pattern: "quorum.cancel_wait_for_all", Type: U8, Doc: "set to 1 at run time: stop waiting for all nodes (votequorum resets it to 0)"},
		{Pattern: "quorum.device.model", Type: Str, Doc: "quorum device model (net); set, a device may register with votequorum"},
		{Pattern: "quorum.device.votes", Type: U32, Doc: "the device's votes (default: nodes - 1 when every node has 1 vote)"},
		{Pattern: "quorum.device.timeout", Type: U32, Doc: "ms without a device poll after which its vote is lost (default 10000)"},
		{Pattern: "quorum.device.sync_timeout", Type: U32, Doc: "ms a synchronization waits for the device's poll (default 30000)"},
		{Pattern: "quorum.device.master_wins", Type: U8, Doc: "corosync: typed u8 by its parser and read by nothing, neither votequorum nor corosync-qdevice (accepted, unused): master_wins is corosync-qdevice's own option (-S master_wins=on, off or model, default model), which it tells votequorum through votequorum_qdevice_master_wins, as it tells corobus's votequorum"},
		{Pattern: "quorum.device.*", Type: Str, Doc: "qdevice settings, read by corosync-qdevice"},
		{Pattern: "quorum.device.*.*", Type: Str, Doc: "qdevice model settings, read by corosync-qdevice"},
		{Pattern: "quorum.device.*.*.*", Type: Str, Doc: "qdevice model settings, read by corosync-qdevice"},

		// cfg
		{Pattern: "cfg.shutdown_timeout", Type: U32, Doc: "ms registered clients have to answer a shutdown request (default 5000)"},

		// nodelist
		{Pattern: "nodelist.node.*.nodeid", Type: U32, ReadOnly: true, Doc: "the node's id (1 to 2^32-1)"},
		{Pattern: "nodelist.node.*.name", Type: Str, ReadOnly: true, Doc: "the node's name: what log lines and `corobus status` call it (default: `ring0_addr` when it is a host name, else `node<ID>`)"},
		{Pattern: "nodelist.node.*.ring*_addr", Type: Str, ReadOnly: true, Check: checkAddress, Doc: "address of the node on link N; ring0_addr is where its bus listens for routes"},
		{Pattern: "nodelist.node.*.quorum_votes", Type: U32, ReadOnly: true, Doc: "the node's votes"},
		{Pattern: "nodelist.node.*.bus_port", Type: U16, ReadOnly: true, Default: "5405", Corobus: true, Doc: "TCP port of the node's bus route listener"},
		{Pattern: "nodelist.node.*.client_port", Type: U16, ReadOnly: true, Default: "5400", Corobus: true, Doc: "TCP port of the node's bus client listener"},
		{Pattern: "nodelist.local_node_pos", Type: U32, ReadOnly: true, Doc: "runtime: index of this node in the nodelist"},

		// system
		{Pattern: "system.qb_ipc_type", Type: Str, Values: []string{"native", "shm", "socket"}, ReadOnly: true, Doc: "native, shm or socket: the IPC gateway's transport when ipc.transport is not set (native is shm)"},
		{Pattern: "system.sched_rr", Type: Str, ReadOnly: true, Doc: "yes (or absent): corosync's real-time scheduling, which corobus does not take: its processes keep the priority they were started with (docs/architecture.md, Departures); anything else: system.priority applies"},
		{Pattern: "system.priority", Type: Str, ReadOnly: true, Check: checkPriority, Doc: "with sched_rr other than yes: the nice value of every process of the node (-20 … 19), max (-20) or min (19); absent: left as started"},
		{Pattern: "system.move_to_root_cgroup", Type: Str, ReadOnly: true, Doc: "accepted, unused"},
		{Pattern: "system.allow_knet_handle_fallback", Type: Str, ReadOnly: true, Doc: "accepted, unused"},
		{Pattern: "system.state_dir", Type: Str, ReadOnly: true, Default: "/var/lib/corosync", Doc: "where the node keeps its state: JetStream store, bus token"},

		// resources, nozzle, pload, qb
		{Pattern: "resources.*", Type: Str, Doc: "corosync resource monitoring (accepted, unused)"},
		{Pattern: "resources.*.*", Type: Str, Doc: "corosync resource monitoring (accepted, unused)"},
		{Pattern: "resources.*.*.*", Type: Str, Doc: "corosync resource monitoring (accepted, unused)"},
		{Pattern: "nozzle.*", Type: Str, Doc: "corosync nozzle device (accepted, unused)"},
		{Pattern: "pload.count", Type: U32, Doc: "pload test service"},
		{Pattern: "pload.size", Type: U32, Doc: "pload test service"},

		// uidgid
		{Pattern: "uidgid.config.uid.*", Type: U8, ReadOnly: true, Doc: "from uidgid sections: this uid may connect"},
		{Pattern: "uidgid.config.gid.*", Type: U8, ReadOnly: true, Doc: "from uidgid sections: this gid may connect"},
		{Pattern: "uidgid.uid.*", Type: U8, Doc: "set at run time: this uid may connect"},
		{Pattern: "uidgid.gid.*", Type: U8, Doc: "set at run time: this gid may connect"},

		// corosync 1.x
		{Pattern: "compatibility", Type: Str, Doc: "corosync 1.x: whitetank or none (accepted, unused)"},
		{Pattern: "aisexec.*", Type: Str, Doc: "corosync 1.x: user and group of the executive (accepted, unused)"},
		{Pattern: "amf.mode", Type: Str, Doc: "corosync 1.x (openais): the AMF service, enabled or disabled (accepted, unused)"},
		{Pattern: "service.*.name", Type: Str, Doc: "service to load (corosync 1.x service { name; ver } blocks)"},
		{Pattern: "service.*.ver", Type: U32, Doc: "version of the service to load"},
		{Pattern: "service.*.use_mgmtd", Type: Str, Doc: "corosync 1.x: Pacemaker's plugin options (accepted, unused)"},
		{Pattern: "service.*.use_logd", Type: Str, Doc: "corosync 1.x: Pacemaker's plugin options (accepted, unused)"},

		// corobus
		{Pattern: "bus.prefix", Type: Str, Corobus: true, Doc: "subject prefix; default corobus.<cluster_name>"},
		{Pattern: "bus.listen", Type: Str, Corobus: true, Default: "127.0.0.1", Doc: "address the client port binds"},
		{Pattern: "bus.token", Type: Str, Corobus: true, Secret: true, Doc: "client token (default: generated into <state_dir>/bus.token); never loaded into objdb"},
		{Pattern: "bus.token_file", Type: Str, Corobus: true, Doc: "where the client token is kept (default <state_dir>/bus.token)"},
		{Pattern: "bus.route_cert_file", Type: Str, Corobus: true, Doc: "PEM certificate of this node's routes, instead of one derived from the cluster key; with route_key_file and route_ca_file"},
		{Pattern: "bus.route_key_file", Type: Str, Corobus: true, Doc: "PEM private key of bus.route_cert_file"},
		{Pattern: "bus.route_ca_file", Type: Str, Corobus: true, Doc: "PEM CA that every peer's route certificate must chain to; peers are verified against their ring0_addr"},
		{Pattern: "objdb.replicas", Type: U8, Corobus: true, Default: "0", Doc: "JetStream replicas of objdb; 0: 1 on one node, 3 on three or more"},
		{Pattern: "loader.search_path", Type: Str, Corobus: true, Default: "local cluster", Doc: "space-separated subject namespaces searched for components, first match wins"},
		{Pattern: "loader.component_dir", Type: Str, Corobus: true, Default: "/usr/lib/corobus/components", Doc: "directory of component executables (LCRSODIR)"},
		{Pattern: "loader.default_services", Type: Str, Values: boolean, Corobus: true, Default: "yes", Doc: "no: load only the service blocks of the file"},
		{Pattern: "ipc.colocate", Type: Str, Corobus: true, Default: "cmap cpg", Doc: "space-separated services (cmap, cpg) of which the IPC gateway runs an instance in its own process, reaching it by function call rather than over the bus while the loader resolves to it (a colocated service is the node's only instance: svcmgr does not start `corobus service cmap` or `cpg` beside it, and lists and records it as hosted); none: every service over the bus (docs/architecture.md and docs/cpg.md have the figures)"},
		{Pattern: "ipc.transport", Type: Str, Values: []string{"", "shm", "socket"}, Corobus: true, Default: "", Doc: "libqb connection type the IPC gateway offers: shm (shared-memory rings, as corosync serves them, and what Pacemaker requires) or socket (datagram sockets); unset: system.qb_ipc_type (native is shm), else shm"},
		{Pattern: "ipc.max_connections", Type: U32, Corobus: true, Default: "4096", Doc: "IPC connections the gateway holds at once, handshakes included, over all services and users; one more is answered EAGAIN (CS_ERR_TRY_AGAIN); 0: no limit"},
		{Pattern: "ipc.max_connections_per_uid", Type: U32, Corobus: true, Default: "512", Doc: "IPC connections one uid may hold at once, handshakes included (root too); one more is answered EAGAIN (CS_ERR_TRY_AGAIN); 0: no limit"},
	}
}

// ReadOnlyPrefixes are the key prefixes corosync's cmap refuses client
// writes under (corosync's main.c: icmap_set_ro_access), and two whole
// keys it refuses.
func ReadOnlyPrefixes() []string { return append([]string(nil), readOnlyPrefixes[:]...) }

// HasReadOnlyPrefix reports whether key is under a read-only prefix (or is
// one of the two whole keys): ReadOnly without the schema lookup.
func HasReadOnlyPrefix(key string) bool {
	for _, p := range readOnlyPrefixes {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

// readOnlyPrefixes is a constant table (an array: ReadOnlyPrefixes hands
// out copies of it).
var readOnlyPrefixes = [...]string{"internal_configuration.", "runtime.services.", "runtime.config.", "runtime.totem.",
	"uidgid.config.", "system.", "nodelist.", "config.reload_in_progress", "config.totemconfig_reload_in_progress"}

// ReadOnly reports whether clients may not write key: it is under a
// read-only prefix, or a configuration key marked read-only.
func ReadOnly(key string) bool {
	if HasReadOnlyPrefix(key) {
		return true
	}
	k, ok := Lookup(key)
	return ok && k.ReadOnly
}

// All returns every known key pattern, in documentation order.
func All() []Key { return table() }

// Lookup finds the pattern a key matches.
func Lookup(key string) (Key, bool) {
	toks := strings.Split(key, ".")
	for _, k := range table() {
		if match(strings.Split(k.Pattern, "."), toks) {
			return k, true
		}
	}
	return Key{}, false
}

// Section reports whether path names a section of the schema, a proper
// prefix of some key's pattern: nodelist, nodelist.node.0, totem.interface.1.
func Section(path string) bool {
	toks := strings.Split(path, ".")
	for _, k := range table() {
		pat := strings.Split(k.Pattern, ".")
		if len(pat) > len(toks) && match(pat[:len(toks)], toks) {
			return true
		}
	}
	return false
}

// match compares tokens; a pattern token "*" matches any token and
// "ring*_addr" any ringN_addr.
func match(pat, toks []string) bool {
	if len(pat) != len(toks) {
		return false
	}
	for i, p := range pat {
		switch {
		case p == "*":
			if toks[i] == "" {
				return false
			}
		case strings.Contains(p, "*"):
			pre, suf, _ := strings.Cut(p, "*")
			mid, ok := strings.CutPrefix(toks[i], pre)
			if !ok {
				return false
			}
			mid, ok = strings.CutSuffix(mid, suf)
			if !ok {
				return false
			}
			if _, err := strconv.Atoi(mid); err != nil {
				return false
			}
		case p != toks[i]:
			return false
		}
	}
	return true
}

// Suggest returns the known key closest to an unknown one, or "".
func Suggest(unknown string) string {
	best, bestD := "", math.MaxInt
	toks := strings.Split(unknown, ".")
	for _, k := range table() {
		// Concrete candidate: the pattern with the unknown key's own
		// tokens where the pattern has wildcards.
		pt := strings.Split(k.Pattern, ".")
		if len(pt) != len(toks) {
			continue
		}
		cand := make([]string, len(pt))
		for i, p := range pt {
			switch {
			case p == "*":
				cand[i] = toks[i]
			case strings.Contains(p, "*"):
				cand[i] = strings.Replace(p, "*", "0", 1) // ring*_addr → ring0_addr
			default:
				cand[i] = p
			}
		}
		c := strings.Join(cand, ".")
		if d := distance(unknown, c); d < bestD {
			best, bestD = c, d
		}
	}
	// Too far apart is not a typo.
	if bestD > max(2, len(unknown)/4) {
		return ""
	}
	return best
}

// distance is the Levenshtein distance.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// Validate checks that value can be stored as the key's type.
func Validate(key, value string) error {
	k, ok := Lookup(key)
	if !ok {
		return fmt.Errorf("unknown key %s", key)
	}
	if err := CheckValue(k.Type, value); err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	if k.Values != nil && !slices.Contains(k.Values, value) {
		return fmt.Errorf("%s: expected one of %s, found %q", key, strings.Join(quoteAll(k.Values), ", "), value)
	}
	if k.Check != nil {
		if err := k.Check(value); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
	}
	return nil
}

// Nice values: the kernel's range, which system.priority's max and min
// name (corosync.conf(5)).
const (
	NiceMax = -20 // the highest priority
	NiceMin = 19  // the lowest
)

// ParsePriority reads system.priority as corosync does: max, min, or a
// nice value. Numbers outside the kernel's range are refused here (the
// kernel would clamp them: a typo should not silently become -20).
func ParsePriority(value string) (int, error) {
	switch value {
	case "max":
		return NiceMax, nil
	case "min":
		return NiceMin, nil
	}
	n, err := strconv.Atoi(value)
	if err != nil || n < NiceMax || n > NiceMin {
		return 0, fmt.Errorf("expected max, min or a nice value from %d to %d, found %q", NiceMax, NiceMin, value)
	}
	return n, nil
}

func checkPriority(value string) error {
	_, err := ParsePriority(value)
	return err
}

// checkAddress takes what corosync's address parser takes at start: an IP
// address (an IPv6 one with its zone too) or a host name, which corosync
// resolves then. A dotted quad with a number out of range (10.0.0.300) is
// neither: corosync stops with "failed to parse node address" (or "bindnet
// address"); so does a name whose last label is all digits, which no
// resolver's name can be. Only the spelling is checked: resolving a name
// here would make a configuration check depend on DNS.
func checkAddress(value string) error {
	if _, err := netip.ParseAddr(value); err == nil {
		return nil
	}
	if hostName(value) {
		return nil
	}
	return fmt.Errorf("expected an IP address or a host name, found %q", value)
}

// hostName reports whether s is spelled as a host name: labels of letters,
// digits, '-' and '_' (found in /etc/hosts), none empty or longer than 63
// bytes nor starting or ending with '-', the last not all digits, at most
// 253 bytes in all (a trailing dot aside).
func hostName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	last := labels[len(labels)-1]
	return strings.Trim(last, "0123456789") != ""
}

func quoteAll(vs []string) []string {
	q := make([]string, len(vs))
	for i, v := range vs {
		q[i] = strconv.Quote(v)
	}
	return q
}

// CheckValue checks that value parses as type t.
func CheckValue(t Type, value string) error {
	bits := map[Type]int{U8: 8, U16: 16, U32: 32, U64: 64, I8: 8, I16: 16, I32: 32, I64: 64}
	switch t {
	case U8, U16, U32, U64:
		if _, err := strconv.ParseUint(value, 0, bits[t]); err != nil {
			return fmt.Errorf("expected an unsigned %d-bit integer (%s), found %q", bits[t], t, value)
		}
	case I8, I16, I32, I64:
		if _, err := strconv.ParseInt(value, 0, bits[t]); err != nil {
			return fmt.Errorf("expected a signed %d-bit integer (%s), found %q", bits[t], t, value)
		}
	case Flt, Dbl:
		size := 64
		if t == Flt {
			size = 32
		}
		if _, err := strconv.ParseFloat(value, size); err != nil {
			return fmt.Errorf("expected a number (%s), found %q", t, value)
		}
	}
	return nil
}
