"""Exit modes and stage kinds: the variants every layer reads, each member carrying its behaviour.

They are ``StrEnum`` members, so a study's YAML, a profile's rows and a validation plan spell
them as before (``"shrink"``, ``"segment"``); code compares members, never strings.
"""

from __future__ import annotations

from enum import StrEnum


class ExitMode(StrEnum):
    """What happens to a batch when some of its samples exit (docs/simulator.md)."""

    NONE = "none"      # no early exits: the baseline every result is compared with
    KEEP = "keep"      # Apparate: exited results return at once, the batch keeps its size
    SHRINK = "shrink"  # PAME: exited samples leave, survivors are compacted
    REBATCH = "rebatch"  # E3 / DREX: survivors of several batches gathered into a new batch
    ASYNC = "async"    # Gati: the batch kept whole, each exit's lookup beside the backbone

    @property
    def consults_early_exits(self) -> bool:
        """Whether an early exit's head runs and decides (not in ``none``)."""
        return self is not ExitMode.NONE

    @property
    def compacts(self) -> bool:
        """Whether survivors are gathered into a smaller batch after an exit (in ``rebatch``,
        into the next stage's batch: one batch alone runs as in ``shrink``)."""
        return self in (ExitMode.SHRINK, ExitMode.REBATCH)

    @property
    def rebatches(self) -> bool:
        """Whether survivors wait in front of the next stage to be batched with other
        batches' survivors (the engine's stage queues, docs/simulator.md)."""
        return self is ExitMode.REBATCH

    @property
    def keeps_size(self) -> bool:
        """Whether the batch runs at its dispatched size until nobody is left."""
        return self in (ExitMode.KEEP, ExitMode.ASYNC)

    @property
    def lookups_aside(self) -> bool:
        """Whether an early exit's lookup (head and check) runs beside the backbone, off its
        critical path (Gati's asynchronous lookups): the backbone goes on at once and waits for
        the lookup's decision only at the next consulted exit (core/execution.py)."""
        return self is ExitMode.ASYNC

    @property
    def real_loop_serves(self) -> bool:
        """Whether the real serving loop (``validate``, ``profile calibrate``) serves this mode:
        it runs one stage at a time, so it cannot overlap a lookup with the backbone."""
        return self is not ExitMode.ASYNC

    def stages_needed(self, n_exits: int) -> list[tuple[StageKind, int]]:
        """The (stage kind, k) a profile must measure for this mode (kinds a profile may leave
        out, 0 ms where absent, are not listed): every segment and the last head; the early
        heads where exits are consulted; the compaction after each early exit where the batch
        shrinks."""
        need = [(StageKind.SEGMENT, k) for k in range(n_exits)]
        early = range(n_exits - 1) if self.consults_early_exits else range(0)
        need += [(StageKind.HEAD, k) for k in (*early, n_exits - 1)]
        if self.compacts:
            need += [(StageKind.COMPACT, k) for k in range(n_exits - 1)]
        return need

    @classmethod
    def parse(cls, value: str | ExitMode, where: str = "exit_mode") -> ExitMode:
        """The member spelled ``value``; ValueError naming the choices otherwise."""
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"{where}: unknown exit mode {value!r}; use one of "
                             f"{', '.join(m.value for m in cls)}") from None


class Discipline(StrEnum):
    """Which ready stage a ``rebatch`` replica runs next (docs/simulator.md)."""

    DEEPEST_FIRST = "deepest_first"  # the stage nearest the last exit: finish work in flight
    OLDEST_FIRST = "oldest_first"    # the stage whose first sample has waited longest
    FULLEST_FIRST = "fullest_first"  # the stage with the most samples waiting


class StageKind(StrEnum):
    """One timed piece of a batch's work (docs/simulator.md). The member order is the canonical
    stage order: the real loop's files store a stage kind as its index here (``code``)."""

    OVERHEAD = "overhead"  # per-batch dispatch cost of the serving loop
    SEGMENT = "segment"    # backbone from exit k-1 to exit k
    HEAD = "head"          # exit classifier k
    CHECK = "check"        # host cost of one exit decision at exit k
    COMPACT = "compact"    # gathering the survivors after exit k
    HANDOFF = "handoff"    # passing a whole batch's activation on at exit k

    @property
    def code(self) -> int:
        """This kind's index in the canonical order (how run files store it)."""
        return _CODE[self]

    @classmethod
    def from_code(cls, code: int) -> StageKind:
        return _ORDER[int(code)]

    @property
    def is_model(self) -> bool:
        """A piece of the network (segment, head): every profile measures these."""
        return self in (StageKind.SEGMENT, StageKind.HEAD)

    @property
    def is_loop(self) -> bool:
        """The serving loop's own per-exit work (check, handoff): measured in newer profiles."""
        return self in (StageKind.CHECK, StageKind.HANDOFF)

    @property
    def optional(self) -> bool:
        """A profile may leave this kind out (0 ms where absent)."""
        return self in (StageKind.CHECK, StageKind.HANDOFF, StageKind.OVERHEAD)


_ORDER: tuple[StageKind, ...] = tuple(StageKind)
_CODE: dict[StageKind, int] = {kind: i for i, kind in enumerate(_ORDER)}


class CostModel(StrEnum):
    """Which calibration of a latency profile becomes the simulator's stage costs; one rule for
    every command (``profile.costs`` in a study; docs/simulator.md)."""

    ISOLATED = "isolated"  # each stage as the profiler timed it alone
    IN_LOOP = "in_loop"    # as timed inside the real serving loop (residuals, tail, wake-up)
    SERVED = "served"      # fitted on the real loop's served streams (validate, profile calibrate)
