"""The soak's independent accounting model: docs/behaviour.md's counter rules written a second
time, from the spec (:class:`CounterModel`), the endings the harness classifies (:class:`End`),
and the plan of a step's expected endings (:class:`Planned`, :func:`predict`). Split out of
tests/soak.py (issue 9); its docstring says how the model is used."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from qqconn import Policy

__all__ = [
    "FATAL_CODES",
    "IDENTIFY_CODES",
    "TRANSIENT_CODES",
    "ZOMBIE_CLOSE_CODE",
    "CounterModel",
    "End",
    "Planned",
    "ending_code",
    "forgets_session",
    "lived_is_quick",
    "predict",
]

FATAL_CODES = frozenset({4001, 4002, 4010, 4011, 4012, 4013, 4014, 4914, 4915, 4924})
TRANSIENT_CODES = (1000, 1001, 1011)
IDENTIFY_CODES = (4006, 4007, 4900, 4903, 4913, 4950)
ZOMBIE_CLOSE_CODE = 4000  # what the machine closes a zombie/stale socket with


# =================================================================================================
# The reference model of behaviour.md's counters
# =================================================================================================


@dataclass(frozen=True)
class End:
    """One end of a connection attempt, as behaviour.md's counters need to know it.

    ``kind``: ``close`` (a close frame, or none: ``code`` None), ``op7``, ``op9``,
    ``watchdog`` (zombie, stale, failed heartbeat sends: decided by the client),
    ``pre_socket`` (token/URL/handshake failure or deadline before the socket opened),
    ``deadline`` (no READY/RESUMED in time after the socket opened).
    ``quick``: None when no socket opened, else whether it lived less than the threshold.
    """

    kind: str
    code: int | None = None
    resumable: bool = False
    quick: bool | None = None
    reached: bool = False
    hello: bool = False

    def label(self) -> str:
        if self.kind == "close":
            return f"close {self.code}" if self.code is not None else "drop"
        if self.kind == "op9":
            return f"op9 {str(self.resumable).lower()}"
        return self.kind


#: Float time stamps: "opened at t, ended 5.00 s later" may subtract to 4.9999999999 s.
#: behaviour.md says 5.00 s is not quick, so half a microsecond of grace (as the machine has).
LIVED_GRACE_S = 5e-7


def lived_is_quick(lived: float, policy: Policy) -> bool:
    """behaviour.md §Counters 1: quick when it lived less than the threshold (4.99 s is, 5.00 s
    is not)."""
    return lived + LIVED_GRACE_S < policy.quick_disconnect_threshold_s


def forgets_session(end: End) -> bool:
    """behaviour.md: op 9 false; close 4006, 4007, 49xx except the fatal ones."""
    if end.kind == "op9":
        return not end.resumable
    if end.kind == "close" and end.code is not None:
        return end.code in (4006, 4007) or (
            4900 <= end.code <= 4999 and end.code not in FATAL_CODES
        )
    return False


def ending_code(end: End) -> int | None:
    """The close code a FATAL caused by this ending reports."""
    if end.kind == "close":
        return end.code
    if end.kind == "watchdog":
        return end.code
    return None


@dataclass
class CounterModel:
    """behaviour.md's counters, written again from the spec (see the module docstring)."""

    policy: Policy
    quick: int = 0
    failed: int = 0
    resume_failures: int = 0
    auth_failures: int = 0
    session: str | None = None
    #: (retryable, close_code) once FATAL is required.
    fatal: tuple[bool, int | None] | None = None
    #: Why the last session was dropped: "forgotten" or "fatal".
    released: list[tuple[str, str]] = field(default_factory=list)

    def copy(self) -> CounterModel:
        return replace(self, released=[])

    def reach(self, session_id: str | None) -> None:
        """READY (with its session) or RESUMED (None) arrived: the attempt budget is whole again."""
        if session_id is not None:
            self.session = session_id
        self.failed = 0
        self.resume_failures = 0
        self.auth_failures = 0

    def end(self, e: End, *, sent_resume: bool) -> None:
        """Apply one connection end (the rules of behaviour.md §Counters and the code table)."""
        p = self.policy
        if self.fatal is not None:
            return
        if e.kind == "close" and e.code in FATAL_CODES:
            self._give_up(False, e.code)
            return
        auth = e.kind == "close" and e.code == 4004
        if auth and self.auth_failures >= 1:
            self._give_up(False, 4004)
            return
        quick_drop = False
        if e.kind != "op7" and e.quick is not None:
            if e.quick:
                self.quick += 1
                quick_drop = True
            else:
                self.quick = 0
        if not e.reached or (e.kind == "close" and e.code == 4008):
            self.failed += 1
        if sent_resume and not e.reached:
            self.resume_failures += 1
        if auth:
            self.auth_failures += 1
        if (forgets_session(e) or self.resume_failures >= p.max_resume_failures) and (
            self.session is not None
        ):
            self.released.append((self.session, "forgotten"))
            self.session = None
            self.resume_failures = 0
        if (
            quick_drop and self.quick >= p.max_quick_disconnects
        ) or self.failed >= p.max_reconnect_attempts:
            self._give_up(True, ending_code(e))

    def _give_up(self, retryable: bool, code: int | None) -> None:
        self.fatal = (retryable, code)
        if self.session is not None:
            self.released.append((self.session, "fatal"))

    def apply(self, e: End) -> None:
        """Simulation: one whole connection (Hello, maybe READY/RESUMED, then its end)."""
        sent_resume = e.hello and self.session is not None
        if e.reached:
            self.reach(None if self.session is not None else "simulated-session")
        self.end(e, sent_resume=sent_resume)

    def backoff_range(self, e: End) -> tuple[float, float]:
        """The delay behaviour.md allows before the attempt that follows ``e``."""
        p = self.policy
        if e.kind == "op7" and e.reached and not e.quick:
            return (0.0, 0.0)
        # op 7 on a connection younger than the quick threshold: the machine backs off (see
        # ConnectionMachine.end_op7_young: a deliberate guard against an op 7 loop, reported
        # as a deviation from behaviour.md's "reconnect at once"); it falls to the backoff row.
        if e.kind == "close" and e.code == 4009:
            return p.rotation_delay_s
        if e.kind == "close" and e.code == 4008:
            return (p.rate_limit_wait_s, p.rate_limit_wait_s)
        if e.kind == "op9" and e.resumable:
            return p.invalid_session_delay_s
        base = p.backoff_s[min(max(self.failed - 1, 0), len(p.backoff_s) - 1)]
        return (base * (1 - p.backoff_jitter), base * (1 + p.backoff_jitter))


@dataclass(frozen=True)
class Planned:
    """An ending a fault should cause. Tuples list every value that may happen."""

    kind: str
    code: int | None = None
    resumable: bool = False
    quick: tuple[bool | None, ...] = (None,)
    reached: tuple[bool, ...] = (True,)
    hello: tuple[bool, ...] = (True,)
    #: The harness made the timing certain (a "long" injection): a mismatch is a bug.
    certain: bool = False
    #: Endings that may replace this one when the loop runs late (a disturbance, not a bug).
    alt: tuple[str, ...] = ()

    def variants(self) -> Iterable[End]:
        for quick, reached, hello in itertools.product(self.quick, self.reached, self.hello):
            if reached and not hello:
                continue
            yield End(self.kind, self.code, self.resumable, quick, reached, hello)

    def label(self) -> str:
        return End(self.kind, self.code, self.resumable).label()


def predict(model: CounterModel, plan: Sequence[Planned]) -> set[tuple[bool, int | None] | None]:
    """Every FATAL verdict (None: no FATAL) the planned endings can lead to from ``model``."""
    outcomes: set[tuple[bool, int | None] | None] = set()
    for combo in itertools.product(*(list(p.variants()) for p in plan)):
        sim = model.copy()
        for end in combo:
            sim.apply(end)
            if sim.fatal is not None:
                break
        outcomes.add(sim.fatal)
    return outcomes
