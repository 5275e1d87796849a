package cswire

// corosync's own services (corodefs.h): the id is what corosync's stats
// keys (stats.ipcs.service<id>.…), runtime.services.<name>.service_id,
// internal_configuration.service.<id> and the sync engine's service order
// use.
const (
	ServiceCmap       = 0
	ServiceCfg        = 1
	ServiceCPG        = 2
	ServiceQuorum     = 3
	ServicePload      = 4
	ServiceVotequorum = 5
	ServiceMon        = 6
	ServiceWd         = 7
)

// CorosyncService is the id and the engine's name (what corosync records
// under internal_configuration.service.<id>.name) of corosync's service
// whose name is name (cmap, cpg, …); ok is false for any other name.
func CorosyncService(name string) (id int, engine string, ok bool) {
	switch name {
	case "cmap":
		id = ServiceCmap
	case "cfg":
		id = ServiceCfg
	case "cpg":
		id = ServiceCPG
	case "quorum":
		id = ServiceQuorum
	case "pload":
		id = ServicePload
	case "votequorum":
		id = ServiceVotequorum
	case "mon":
		id = ServiceMon
	case "wd":
		id = ServiceWd
	default:
		return 0, "", false
	}
	return id, "corosync_" + name, true
}

// RequestIDs is how many library request ids corosync's service of id
// has, 0 to RequestIDs-1: its lib_engine_count (cmap 10, cfg 12, cpg 13,
// quorum 5, votequorum 12 in corosync 3.1). corosync's dispatcher answers
// a request of another id CS_ERR_INVALID_PARAM and counts it in the
// connection's invalid_request. 0 for a service corobus does not serve.
func RequestIDs(id int) int32 {
	switch id {
	case ServiceCmap:
		return 10
	case ServiceCfg, ServiceVotequorum:
		return 12
	case ServiceCPG:
		return 13
	case ServiceQuorum:
		return 5
	}
	return 0
}
