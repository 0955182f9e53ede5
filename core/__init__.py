"""The types and rules every layer reads: exit modes and stage kinds, how a batch runs through
its stages (the execution rule), when a batch goes (the batching rule). Standard library only,
so the GPU-side serving loop imports it as the simulator does."""

from .batching import dispatch, dispatch_time
from .execution import BatchPlan, Exit, Stage, all_exit_at, batch_plan, batch_steps, no_exit
from .modes import CostModel, ExitMode, StageKind

__all__ = ["BatchPlan", "CostModel", "Exit", "ExitMode", "Stage", "StageKind", "all_exit_at", "batch_plan",
           "batch_steps", "dispatch", "dispatch_time", "no_exit"]
