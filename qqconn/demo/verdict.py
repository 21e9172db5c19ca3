"""The verdict of the tour: pure records of what happened, and pure judgements over them.

Nothing here runs anything. Each :class:`Check` is one rule of docs/behaviour.md checked against
what was recorded; a scenario passes only when it has checks and every one of them passed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from qqconn.endings import EndingKind

__all__ = [
    "Check",
    "Delivery",
    "DemoReport",
    "FaultTiming",
    "ScenarioResult",
    "Step",
    "delivery_checks",
    "judge_delivery",
]


@dataclass(frozen=True, slots=True)
class Check:
    """One rule of docs/behaviour.md, checked against what happened."""

    name: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Delivery:
    """Events the gateway accepted versus events the host received."""

    sent: int
    delivered: int
    lost: tuple[int, ...]
    duplicated: tuple[int, ...]
    out_of_order: tuple[int, ...]


def judge_delivery(accepted: Sequence[int], received: Sequence[int | None]) -> Delivery:
    """Compare the gateway's accepted seqs with the seqs the host received (READY excluded).

    Lost: accepted, never received. Duplicated: received more than once. Out of order: a seq
    received after a larger one. A received ``None`` (an event without ``s``) counts as
    delivered but cannot be matched.
    """
    counts = Counter(s for s in received if s is not None)
    lost = tuple(s for s in accepted if counts[s] == 0)
    duplicated = tuple(sorted(s for s, n in counts.items() if n > 1))
    out_of_order: list[int] = []
    highest = -1
    for s in received:
        if s is None:
            continue
        if s < highest:
            out_of_order.append(s)
        highest = max(highest, s)
    return Delivery(len(accepted), len(received), lost, duplicated, tuple(out_of_order))


def _listed(seqs: Sequence[int], limit: int = 8) -> str:
    shown = ", ".join(str(s) for s in seqs[:limit])
    return shown + (f" … (+{len(seqs) - limit})" if len(seqs) > limit else "")


def delivery_checks(d: Delivery) -> list[Check]:
    """docs/behaviour.md rule 10: each dispatch reaches the host once, in ``s`` order, none lost."""
    return [
        Check("no event lost", not d.lost, f"lost s = {_listed(d.lost)}" if d.lost else ""),
        Check(
            "no event duplicated",
            not d.duplicated,
            f"duplicated s = {_listed(d.duplicated)}" if d.duplicated else "",
        ),
        Check(
            "events in s order",
            not d.out_of_order,
            f"out of order: s = {_listed(d.out_of_order)}" if d.out_of_order else "",
        ),
    ]


@dataclass(frozen=True, slots=True)
class Step:
    """One transition the machine took, as logged."""

    at: float
    source: str
    dest: str
    trigger: str
    why: str
    #: The kind of ending that caused it (the machine's name for it), on an edge that ended a
    #: connection (:func:`~qqconn.demo.explain.ends_connection`).
    ending: EndingKind | None = None


@dataclass(slots=True)
class FaultTiming:
    """One injected fault, how long until qqconn noticed, and until it was live again."""

    fault: str
    injected_at: float
    detect_s: float | None = None
    recover_s: float | None = None
    outcome: str = ""


@dataclass(slots=True)
class ScenarioResult:
    """What one scenario did and whether it behaved."""

    name: str
    title: str
    faults: list[FaultTiming] = field(default_factory=list)
    delivery: Delivery | None = None
    end_state: str = "?"
    checks: list[Check] = field(default_factory=list)
    paths: list[list[Step]] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        """Did every check pass (and was there at least one)?"""
        return bool(self.checks) and all(c.ok for c in self.checks)

    def failures(self) -> list[str]:
        """One line per failed check."""
        return [
            f"{self.name}: {c.name}" + (f" ({c.detail})" if c.detail else "")
            for c in self.checks
            if not c.ok
        ]


@dataclass(slots=True)
class DemoReport:
    """Every scenario's result, and the tour's wall time."""

    results: list[ScenarioResult]
    wall_s: float
    #: The output was closed before the end (``qqconn demo | head``): the tour stopped early.
    output_closed: bool = False

    @property
    def ok(self) -> bool:
        """Did every scenario behave as docs/behaviour.md requires?"""
        return bool(self.results) and all(r.ok for r in self.results)

    def failures(self) -> list[str]:
        """One line per failed check, across scenarios."""
        return [line for r in self.results for line in r.failures()]
