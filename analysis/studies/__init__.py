"""Studies built on the simulator: capacity search, sweeps, the policy frontier, the demo, grids
of variants."""
