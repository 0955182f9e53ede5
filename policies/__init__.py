"""Exit policies and how they are fitted to constraints."""

from .base import ExitPolicy
from .registry import POLICIES, PolicyConfig, make_policy

__all__ = ["ExitPolicy", "POLICIES", "PolicyConfig", "make_policy"]
