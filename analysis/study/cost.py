"""What serving costs: one rule for every command that prices its result (capacity, sweep,
optimize)."""

from __future__ import annotations


def cost_per_million(price_per_replica_hour: float | None, replicas: int,
                     rate_rps: float) -> float | None:
    """The price of a million requests served at ``rate_rps`` on ``replicas`` replicas, each
    costing ``price_per_replica_hour`` (None without a price or a positive rate)."""
    if price_per_replica_hour is None or not rate_rps > 0:
        return None
    return price_per_replica_hour * replicas / (rate_rps * 3600.0) * 1e6
