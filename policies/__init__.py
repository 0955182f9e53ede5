"""Exit policies and how they are fitted to constraints."""

from .base import ExitPolicy, StatefulPolicy
from .configs import PolicyConfigBase
from .costs import average_cost, evaluate, exit_costs, full_model_cost
from .mixing import best_mix, upper_hull
from .oracle_lp import oracle_bound, oracle_frontier
from .parse import parse_policy, policy_config
from .registry import POLICIES, REGISTRY, build_policy, make_policy, register

__all__ = [
    "ExitPolicy", "StatefulPolicy", "POLICIES", "REGISTRY", "PolicyConfigBase", "parse_policy",
    "policy_config",
    "make_policy", "build_policy", "register",
    "exit_costs", "full_model_cost", "average_cost", "evaluate", "oracle_bound",
    "oracle_frontier", "best_mix", "upper_hull",
]
