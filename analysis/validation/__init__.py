"""``offramp validate`` and ``offramp profile calibrate``: the plan, the real runs read back,
the simulated side as a plain study, the judge, the comparison."""
