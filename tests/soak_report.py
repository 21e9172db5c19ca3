"""The soak's reporting: :class:`SoakReport` (every count of a run and its violations), the
structlog tap that counts log lines and keeps the alarming ones, and the ``websockets`` error
collector. Split out of tests/soak.py (issue 9)."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import structlog

__all__ = ["LogTap", "SoakReport"]


@dataclass
class SoakReport:
    """Everything a soak run counts; ``violations`` must stay empty."""

    seed: int
    managers: int = 0
    faults: int = 0
    by_fault: Counter[str] = field(default_factory=Counter)
    fatal_planned: int = 0
    fatal_unplanned: int = 0
    disturbed: int = 0
    disturbances: Counter[str] = field(default_factory=Counter)
    #: Endings the client's own rules produced because the loop was late (a watchdog, an
    #: attempt deadline, a connect failure, with the measured lag past a fraction of that
    #: deadline): accepted, counted here by label, never silently (tests/soak.py).
    excused: Counter[str] = field(default_factory=Counter)
    excused_max_lag_s: float = 0.0
    sent: int = 0
    delivered: int = 0
    duplicated: int = 0
    gaps: int = 0
    lost_forgotten: int = 0
    lost_fatal: int = 0
    lost_unlearned: int = 0
    leaks: int = 0
    leak_checks: int = 0
    reconnects: int = 0
    bad_frames: int = 0
    state_file_reads: int = 0
    max_lag_s: float = 0.0
    phase: str = "start"
    lag_spikes: Counter[str] = field(default_factory=Counter)
    phase_time: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    resources: str = ""
    violations: list[str] = field(default_factory=list)

    def excuse(self, label: str, lag_s: float) -> None:
        """Count an ending excused by a loop lag of ``lag_s`` seconds."""
        self.excused[label] += 1
        self.excused_max_lag_s = max(self.excused_max_lag_s, lag_s)

    def violation(self, text: str) -> None:
        if len(self.violations) < 200:
            self.violations.append(text)

    @property
    def lost(self) -> int:
        return self.lost_forgotten + self.lost_fatal + self.lost_unlearned

    def line(self, label: str) -> str:
        return (
            f"soak[{label}] seed={self.seed} faults={self.faults} events sent={self.sent} "
            f"delivered={self.delivered} lost={self.lost} (forgotten={self.lost_forgotten} "
            f"fatal={self.lost_fatal} unlearned={self.lost_unlearned}) "
            f"duplicated={self.duplicated} gaps={self.gaps} managers={self.managers} "
            f"fatal={self.fatal_planned}+{self.fatal_unplanned} unplanned "
            f"reconnects={self.reconnects} leaks={self.leaks}/{self.leak_checks} checks "
            f"bad_frames={self.bad_frames} disturbed={self.disturbed} "
            f"excused by loop lag: {sum(self.excused.values())}, "
            f"max lag {self.excused_max_lag_s:.2f} s {dict(self.excused)} "
            f"state_file_reads={self.state_file_reads} max_lag={self.max_lag_s * 1000:.0f}ms "
            f"lag_spikes={dict(self.lag_spikes)} "
            f"phases={ {k: round(v, 1) for k, v in self.phase_time.items()} } "
            f"time={self.elapsed_s:.1f}s violations={len(self.violations)}"
        )

    def failure(self, label: str) -> str:
        head = "\n".join(self.violations[:25])
        return (
            f"{self.line(label)}\nreplay with SOAK_SEED={self.seed}\n"
            f"faults: {dict(self.by_fault)}\ndisturbances: {dict(self.disturbances)}\n"
            f"resources: {self.resources}\n{head}"
        )


class LogTap:
    """A structlog processor (used inside ``capture_logs``) that counts every log line, keeps
    the alarming ones, and drops the rest so a long soak does not hoard memory."""

    ALARMS = ("qqconn.internal_error", "qqconn.callback_failed")

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.by_app: dict[str, Counter[str]] = {}
        self.alarms: list[dict[str, Any]] = []
        self.longest_bad_frame_error = 0

    def __call__(self, _logger: Any, method: str, event_dict: dict[str, Any]) -> Any:
        name = str(event_dict.get("event"))
        self.counts[name] += 1
        app = event_dict.get("app_id")
        if isinstance(app, str):
            self.by_app.setdefault(app, Counter())[name] += 1
        if name == "qqconn.bad_frame":
            self.longest_bad_frame_error = max(
                self.longest_bad_frame_error, len(str(event_dict.get("error", "")))
            )
        if (name in self.ALARMS or method in ("exception", "critical")) and len(self.alarms) < 50:
            self.alarms.append({k: str(v)[:300] for k, v in event_dict.items()})
        raise structlog.DropEvent

    def count(self, app: str, name: str) -> int:
        return self.by_app.get(app, Counter())[name]


class _ErrorRecords(logging.Handler):
    """Collects ERROR records of the ``websockets`` logger (a handler crashing in the fake)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.records) < 20:
            self.records.append(f"{record.name}: {record.getMessage()} {record.exc_text or ''}")
