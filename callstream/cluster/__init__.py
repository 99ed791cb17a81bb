"""Nodes on one PostgreSQL store, coordinated through Redis (docs/cluster.md, "Redis"):
call ownership leases and node liveness (:mod:`.leases`), a call's REST commands
forwarded to its owner (:mod:`.forward`), a dead node's calls ended by a survivor
(:mod:`.node`)."""
