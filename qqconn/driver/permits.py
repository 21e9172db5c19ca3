"""Identify permits: at most ``max_concurrency`` Identifies per ``identify_window_s`` per app.

The machine decides *that* an attempt needs a permit and waits for it (AWAITING_PERMIT,
docs/behaviour.md rule 17); a limiter only answers the question "may this shard Identify
now?", at once: :class:`Granted`, or :class:`Deferred` with when to ask again. It never sleeps
(the machine's PERMIT timer does the waiting), so a limiter holds no task and a stopped shard
leaves nothing behind.

Buckets are ``shard_id % max_concurrency`` (docs/protocol.md §3.2, §9): each bucket lets one
Identify through per window, in the order the shards asked, and counts the window from the
moment the Identify was *sent* (:meth:`~IdentifyLimiter.identify_sent`), not from the grant:
a token fetch and a handshake lie between the two, and the gateway counts what it receives.
A grant whose attempt ended before its Identify left (a connect failure, a socket closed before
Hello) started no session: :meth:`~IdentifyLimiter.unused` hands it back, and the bucket's
window runs from the last Identify actually sent, so a failing network is paced by the backoff
ladder, not by the permit window.
``session_start_limit.remaining`` of 0 defers every Identify until ``reset_after`` has passed.

:class:`LocalIdentifyLimiter` serves every shard of one process (one per app; share it among
the managers of a :class:`~qqconn.driver.shards.BotShards`). ``qqconn.redis`` has the same
interface on Redis, for shards spread over processes and machines.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from qqconn.protocol import SessionStartLimit

__all__ = [
    "SEND_MARGIN",
    "Deferred",
    "Granted",
    "IdentifyLimiter",
    "LocalIdentifyLimiter",
    "PermitAnswer",
]

#: A bucket stays closed this fraction of a window longer than the window itself, so that
#: delivery jitter between two shards' sockets never puts two Identifies in one window as the
#: gateway counts them.
SEND_MARGIN = 0.02


@dataclass(frozen=True, slots=True)
class Granted:
    """The shard may Identify now."""


@dataclass(frozen=True, slots=True)
class Deferred:
    """Not now. ``wait_s``: ask again after this long (None: the limiter cannot tell, e.g. its
    store is unreachable; the machine backs off). ``reason`` is for the log."""

    wait_s: float | None
    reason: str


PermitAnswer = Granted | Deferred


class IdentifyLimiter(Protocol):
    """What the driver asks of a limiter. Every method answers at once (no waiting inside)."""

    async def request(self, shard_id: int) -> PermitAnswer:
        """May ``shard_id`` Identify now? A granted permit is counted against the window."""
        ...

    async def identify_sent(self, shard_id: int) -> None:
        """``shard_id``'s Identify left now: its bucket's window runs from here."""
        ...

    def unused(self, shard_id: int) -> None:
        """``shard_id``'s attempt ended without sending the Identify its permit was for."""
        ...

    def observe(self, limit: SessionStartLimit) -> None:
        """``/gateway/bot`` reported this session start limit."""
        ...

    def withdraw(self, shard_id: int) -> None:
        """``shard_id`` stopped asking (its manager ended): let the shards behind it go."""
        ...


@dataclass(slots=True)
class _Bucket:
    #: no grant before this (a grant holds the bucket for one window until it is sent or unused)
    next_free: float = float("-inf")
    #: when the bucket frees counting only the Identifies actually sent
    sent_free: float = float("-inf")
    #: the shard holding an unsent grant, if any
    holder: int | None = None
    queue: list[int] = field(default_factory=list)
    due: dict[int, float] = field(default_factory=dict)


class LocalIdentifyLimiter:
    """The identify limiter of one process (docs/behaviour.md rule 17).

    ``window_s`` is the policy's ``identify_window_s``; ``max_concurrency`` the starting value
    until ``/gateway/bot`` reports one (:meth:`observe`). ``clock`` is monotonic seconds.
    """

    def __init__(
        self,
        *,
        window_s: float = 5.0,
        max_concurrency: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be positive, got {window_s!r}")
        if type(max_concurrency) is not int or max_concurrency < 1:
            raise ValueError(f"max_concurrency must be a whole number ≥ 1, got {max_concurrency!r}")
        self.window_s = float(window_s)
        self.max_concurrency = max_concurrency
        self._clock = clock
        self._buckets: dict[int, _Bucket] = {}
        self._remaining: int | None = None
        self._reset_at = float("-inf")
        #: Permits granted so far (what a test or the bench reads).
        self.granted = 0

    def __repr__(self) -> str:
        return (
            f"<LocalIdentifyLimiter window_s={self.window_s:g} "
            f"max_concurrency={self.max_concurrency} remaining={self._remaining}>"
        )

    def _bucket(self, shard_id: int) -> tuple[int, _Bucket]:
        key = shard_id % self.max_concurrency
        return key, self._buckets.setdefault(key, _Bucket())

    def observe(self, limit: SessionStartLimit) -> None:
        now = self._clock()
        self.max_concurrency = limit.max_concurrency
        self._remaining = limit.remaining
        self._reset_at = now + limit.reset_after_ms / 1000.0

    def answer(self, shard_id: int) -> PermitAnswer:
        """:meth:`request`, synchronously."""
        now = self._clock()
        if self._remaining is not None and self._remaining <= 0:
            if now < self._reset_at:
                return Deferred(
                    self._reset_at - now,
                    "session_start_limit.remaining is 0: no Identify until reset_after",
                )
            self._remaining = None  # the daily budget was reset; /gateway/bot will say more
        key, bucket = self._bucket(shard_id)
        window = self.window_s
        if bucket.holder == shard_id:  # asking again: its earlier grant was never sent
            self._hand_back(bucket)
        # A shard that was told when to come back and did not (stopped, or gone to Resume)
        # must not hold the others up for ever.
        while (
            bucket.queue
            and bucket.queue[0] != shard_id
            and bucket.due.get(bucket.queue[0], now) + window < now
        ):
            bucket.due.pop(bucket.queue.pop(0), None)
        if shard_id not in bucket.queue:
            bucket.queue.append(shard_id)
        place = bucket.queue.index(shard_id)
        if place == 0 and now >= bucket.next_free:
            bucket.queue.pop(0)
            bucket.due.pop(shard_id, None)
            bucket.next_free = now + window * (1 + SEND_MARGIN)
            bucket.holder = shard_id
            if self._remaining is not None:
                self._remaining -= 1
            self.granted += 1
            return Granted()
        wait = max(bucket.next_free - now, 0.0) + place * window * (1 + SEND_MARGIN)
        bucket.due[shard_id] = now + wait
        return Deferred(
            wait,
            f"identify bucket {key} is busy ({self.max_concurrency} per {window:g} s); "
            f"{place} shard(s) ahead",
        )

    async def request(self, shard_id: int) -> PermitAnswer:
        return self.answer(shard_id)

    async def identify_sent(self, shard_id: int) -> None:
        _, bucket = self._bucket(shard_id)
        sent = self._clock() + self.window_s * (1 + SEND_MARGIN)
        bucket.sent_free = max(bucket.sent_free, sent)
        bucket.next_free = max(bucket.next_free, sent)
        if bucket.holder == shard_id:
            bucket.holder = None

    def unused(self, shard_id: int) -> None:
        for bucket in self._buckets.values():  # every bucket: max_concurrency may have changed
            if bucket.holder == shard_id:
                self._hand_back(bucket)

    @staticmethod
    def _hand_back(bucket: _Bucket) -> None:
        """The holder's grant was never sent: it started no session, so the window runs from
        the last Identify sent. (``remaining`` stays as counted: the next ``/gateway/bot``
        reports the gateway's own figure.)"""
        bucket.holder = None
        bucket.next_free = bucket.sent_free

    def withdraw(self, shard_id: int) -> None:
        self.unused(shard_id)
        for bucket in self._buckets.values():
            if shard_id in bucket.queue:
                bucket.queue.remove(shard_id)
            bucket.due.pop(shard_id, None)
