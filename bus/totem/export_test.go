package totem

// Announce makes a node of cfg announce protocol version v in its
// heartbeats instead of ProtocolVersion: a node of another build, for the
// tests of package totem_test.
func Announce(cfg *Config, v uint32) { cfg.announce = &v }
