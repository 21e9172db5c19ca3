"""Exactly once, within a window: the event ids delivered recently (docs/behaviour.md rule 23).

The platform retries a delivery it did not see acknowledged, with the same event ``id``;
:class:`DedupeWindow` remembers the ids it has delivered (bounded in count and in age) so a
retry is acknowledged and not delivered again. With a :class:`DedupeStore` the window survives a
restart. The caller passes every time in; see :mod:`qqconn.webhook.core`.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Iterable
from typing import Protocol

from qqconn.errors import ConfigError

__all__ = [
    "DEFAULT_DEDUPE_MAX_IDS",
    "DEFAULT_DEDUPE_WINDOW_S",
    "Admission",
    "DedupeStore",
    "DedupeWindow",
]

#: The dedupe window's bound in time: an id delivered longer ago than this may be delivered
#: again if the platform sends it again.
DEFAULT_DEDUPE_WINDOW_S = 3600.0
#: The dedupe window's bound in count: only the most recent ids are remembered.
DEFAULT_DEDUPE_MAX_IDS = 50_000


class Admission(enum.Enum):
    """What to do with an event id that just arrived."""

    #: never seen (or forgotten): deliver it, then :meth:`DedupeWindow.finish` it
    NEW = "new"
    #: another request is delivering it right now: wait for that one, then acknowledge
    IN_FLIGHT = "in_flight"
    #: delivered already: acknowledge, do not deliver
    DELIVERED = "delivered"


class DedupeStore(Protocol):
    """Where a :class:`DedupeWindow` keeps its ids across restarts.

    ``load`` returns ``(event_id, delivered_at)`` pairs, oldest first; ``add`` records one
    delivery (it must be on disk, or wherever, when it returns); ``compact`` replaces the whole
    record with ``entries`` atomically. Errors are the store's to log: a store that cannot
    write must not stop deliveries.
    """

    def load(self) -> Iterable[tuple[str, float]]: ...

    def add(self, event_id: str, delivered_at: float) -> None: ...

    def compact(self, entries: Iterable[tuple[str, float]]) -> None: ...


class DedupeWindow:
    """The ids delivered recently: at most ``max_ids`` of them, none older than ``window_s``.

    Times are seconds on a wall clock (they must mean the same after a restart); the caller
    passes them. With ``store``, ids are loaded from it at construction (those still inside the
    window), each :meth:`finish` is added to it, and it is compacted when it has grown to twice
    what the window holds.
    """

    def __init__(
        self,
        *,
        window_s: float = DEFAULT_DEDUPE_WINDOW_S,
        max_ids: int = DEFAULT_DEDUPE_MAX_IDS,
        store: DedupeStore | None = None,
        now: float | None = None,
    ) -> None:
        if not isinstance(window_s, (int, float)) or isinstance(window_s, bool) or not window_s > 0:
            raise ConfigError("dedupe_window_s", f"must be > 0, got {window_s!r}")
        if isinstance(max_ids, bool) or not isinstance(max_ids, int) or max_ids < 1:
            raise ConfigError("dedupe_max_ids", f"must be a positive integer, got {max_ids!r}")
        self.window_s = float(window_s)
        self.max_ids = max_ids
        self._store = store
        self._delivered: OrderedDict[str, float] = OrderedDict()
        self._in_flight: set[str] = set()
        self._since_compact = 0
        self.loaded = 0
        if store is not None:
            for event_id, at in store.load():
                if isinstance(event_id, str) and isinstance(at, (int, float)):
                    self._delivered[event_id] = float(at)
                    self._delivered.move_to_end(event_id)
            if now is not None:
                self._evict(now)
            self.loaded = len(self._delivered)
            self._since_compact = self.loaded

    def __len__(self) -> int:
        return len(self._delivered)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._delivered

    def admit(self, event_id: str, now: float) -> Admission:
        """Should the event with this id be delivered? NEW marks it in flight."""
        self._evict(now)
        if event_id in self._delivered:
            return Admission.DELIVERED
        if event_id in self._in_flight:
            return Admission.IN_FLIGHT
        self._in_flight.add(event_id)
        return Admission.NEW

    def finish(self, event_id: str, now: float) -> None:
        """The host's callback has returned for this id: remember it (and store it)."""
        self._in_flight.discard(event_id)
        self._delivered[event_id] = now
        self._delivered.move_to_end(event_id)
        self._evict(now)
        if self._store is not None:
            self._store.add(event_id, now)
            self._since_compact += 1
            if self._since_compact >= 2 * self.max_ids:
                self._store.compact(list(self._delivered.items()))
                self._since_compact = len(self._delivered)

    def abandon(self, event_id: str) -> None:
        """The delivery did not happen (the server is shutting down): a retry may deliver it."""
        self._in_flight.discard(event_id)

    def entries(self) -> list[tuple[str, float]]:
        """The remembered ids with their delivery times, oldest first."""
        return list(self._delivered.items())

    def _evict(self, now: float) -> None:
        delivered = self._delivered
        oldest_kept = now - self.window_s
        while delivered:
            event_id, at = next(iter(delivered.items()))
            if len(delivered) > self.max_ids or at < oldest_kept:
                del delivered[event_id]
            else:
                break
