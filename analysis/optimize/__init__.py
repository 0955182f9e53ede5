"""``offramp optimize``: the configuration that meets a latency SLO at the load, with the
accuracy and the compute budget kept (goal, space, evaluation, search, baselines, outputs)."""
