"""Resource figures of the soak process: the exact leak comparison (:class:`Resources`) and the
long-run sampling of resident memory, file descriptors and tasks (:class:`ResourceSampler`).

Split out of tests/soak.py (issue 9): this module only measures; tests/soak.py decides when.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from qqconn.testing import FakeGateway

__all__ = [
    "HTTP_TASK",
    "TRANSIENT_TASKS",
    "ResourceSampler",
    "Resources",
    "Sample",
    "records_kib",
    "rss_kib",
]


def _task_label(task: asyncio.Task[Any]) -> str:
    coro = task.get_coro()
    return getattr(coro, "__qualname__", type(coro).__name__)


#: Task of one HTTP keep-alive connection on the fake's side; its connection has two file
#: descriptors (the manager's pooled client socket and the fake's server socket).
HTTP_TASK = "H11Server._serve"
#: Tasks that live for a moment by design (one per heartbeat or other send).
TRANSIENT_TASKS = frozenset({"Attempt._send"})


@dataclass(frozen=True)
class Resources:
    """Tasks, file descriptors and sockets of the process at one moment.

    HTTP keep-alive connections (httpx's pool in each manager, and the fake's handler for each)
    come and go with the pool's own policy, so they are counted apart and only bounded (two per
    manager at most); everything else must equal the baseline exactly. The harness's own tasks
    (named ``soak-…``) are not counted."""

    tasks: Counter[str]
    fds: dict[str, str]
    http: int

    @classmethod
    def now(cls) -> Resources:
        tasks = Counter(
            _task_label(t)
            for t in asyncio.all_tasks()
            if not t.done() and not t.get_name().startswith("soak-")
        )
        fds: dict[str, str] = {}
        for name in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                fds[name] = os.readlink(f"/proc/self/fd/{name}")
        http = tasks.pop(HTTP_TASK, 0)
        return cls(tasks, fds, http)

    @property
    def sockets(self) -> int:
        return sum(1 for target in self.fds.values() if target.startswith("socket:"))

    @property
    def quiet(self) -> bool:
        """No task that only lives for a moment is running."""
        return not any(self.tasks[t] for t in TRANSIENT_TASKS)

    def same_as(self, other: Resources, *, managers: int) -> bool:
        return (
            sum(self.tasks.values()) == sum(other.tasks.values())
            and len(self.fds) - 2 * self.http == len(other.fds) - 2 * other.http
            and self.sockets - 2 * self.http == other.sockets - 2 * other.http
            and self.http <= 2 * managers
        )

    def diff(self, base: Resources) -> str:
        more = self.tasks - base.tasks
        fewer = base.tasks - self.tasks
        kinds = Counter(t.split(":", 1)[0] for t in self.fds.values())
        base_kinds = Counter(t.split(":", 1)[0] for t in base.fds.values())
        return (
            f"tasks {sum(base.tasks.values())}->{sum(self.tasks.values())} "
            f"(+{dict(more)} -{dict(fewer)}), fds {len(base.fds)}->{len(self.fds)} "
            f"(+{dict(kinds - base_kinds)} -{dict(base_kinds - kinds)}), "
            f"sockets {base.sockets}->{self.sockets}, HTTP keep-alive connections "
            f"{base.http}->{self.http}"
        )


def rss_kib() -> int:
    """Resident memory of this process in KiB (``VmRSS`` of /proc/self/status)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def records_kib(gateways: Iterable[FakeGateway]) -> int:
    """What the fake gateways' own records hold, in KiB: every session's replay buffer (the
    fake keeps every dispatch it accepted, the soak's accounting reads it at the end), every
    frame, socket and HTTP request record. They grow with the traffic by design, so the memory
    bound is on resident memory minus this (``sys.getsizeof`` of the objects and their list
    slots; the allocator's overhead on top is part of the slack)."""
    size = sys.getsizeof
    total = 0
    for gw in gateways:
        for session in gw._sessions.values():
            total += size(session.buffer)
            for entry in session.buffer:
                total += size(entry) + size(entry[0]) + size(entry[1])
        total += size(gw.frames) + sum(size(f) + size(f.payload_text) for f in gw.frames)
        for conn in gw.connections:
            total += size(conn) + size(conn.frames) + 8
        total += sum(size(r) + 8 for r in gw.http_requests)
    return total // 1024


@dataclass(frozen=True)
class Sample:
    """One reading at a settled moment: every manager ALIVE, back to the leak baseline.

    ``fds`` and ``tasks`` are net of HTTP keep-alive connections (two descriptors and one fake
    handler task each; bounded apart by :meth:`Resources.same_as`) and of the harness's own
    ``soak-…`` tasks, so they are comparable across samples."""

    elapsed_s: float
    rss_kib: int
    records_kib: int
    fds: int
    tasks: int
    http: int

    @property
    def rest_kib(self) -> int:
        """Resident memory that is not the fake's records: what must stay flat."""
        return self.rss_kib - self.records_kib

    def line(self) -> str:
        return (
            f"t={self.elapsed_s:7.0f}s rss={self.rss_kib / 1024:7.1f}MiB (fake's records "
            f"{self.records_kib / 1024:.1f}MiB, rest {self.rest_kib / 1024:.1f}MiB) fds={self.fds} "
            f"tasks={self.tasks} (+{self.http} HTTP keep-alive connections)"
        )


@dataclass
class ResourceSampler:
    """Samples at the start and then every ``every_s`` seconds, and says whether the figures
    stayed flat.

    The bound: descriptors and tasks equal the first sample's at every sample (they are read at
    a barrier where the exact leak comparison holds, so any drift is a leak); resident memory
    minus the fake gateways' records (:func:`records_kib`, which grow with the traffic by
    design) may grow at most ``rss_slack_kib`` (default 64 MiB) over the first sample, which
    covers the allocator's warm-up and fragmentation; a leak of one 1 KiB object per reconnect
    would pass it in about half an hour of the fifty-manager soak."""

    every_s: float
    clock: Callable[[], float]
    emit: Callable[[str], None] = print
    rss_slack_kib: int = 64 * 1024
    samples: list[Sample] = field(default_factory=list)
    _started: float | None = None

    def due(self) -> bool:
        if self._started is None:
            return True
        return self.clock() - self._started >= self.every_s * len(self.samples)

    def take(self, resources: Resources, gateways: Iterable[FakeGateway]) -> Sample:
        now = self.clock()
        if self._started is None:
            self._started = now
        sample = Sample(
            elapsed_s=now - self._started,
            rss_kib=rss_kib(),
            records_kib=records_kib(gateways),
            fds=len(resources.fds) - 2 * resources.http,
            tasks=sum(resources.tasks.values()),
            http=resources.http,
        )
        self.samples.append(sample)
        self.emit(f"soak resources {sample.line()}")
        return sample

    def problems(self) -> list[str]:
        """What is not flat, compared with the first sample (empty when all is flat)."""
        if not self.samples:
            return []
        first, found = self.samples[0], []
        for s in self.samples[1:]:
            if s.fds != first.fds or s.tasks != first.tasks:
                found.append(f"resources drifted: start {first.line()} / now {s.line()}")
            if s.rest_kib - first.rest_kib > self.rss_slack_kib:
                found.append(
                    f"resident memory (less the fake's records) grew "
                    f"{(s.rest_kib - first.rest_kib) / 1024:.1f} MiB "
                    f"(bound {self.rss_slack_kib / 1024:.0f} MiB): start {first.line()} / "
                    f"now {s.line()}"
                )
        return found

    def summary(self) -> str:
        if not self.samples:
            return "no resource sample"
        first, last = self.samples[0], self.samples[-1]
        problems = self.problems()
        verdict = "flat" if not problems else f"NOT FLAT ({len(problems)} problems)"
        return (
            f"{len(self.samples)} samples; start {first.line()}; end {last.line()}; "
            f"bound: rss less the fake's records +{self.rss_slack_kib / 1024:.0f} MiB, fds and "
            f"tasks exact; verdict: {verdict}"
        )
