"""The control plane: admin API, operator overrides, health prober, failover drills, and the admin client."""
