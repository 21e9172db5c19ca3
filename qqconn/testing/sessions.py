"""The fake gateway's bookkeeping: tokens, sessions, sequence numbers, replay buffers, and who
may Identify or Resume.

Pure: no sockets, no asyncio, no clock. Whatever needs the time takes ``now`` (monotonic
seconds) from the caller; randomness comes from the gateway's seeded ``random.Random``. The
WebSocket side (:mod:`qqconn.testing.ws`) asks these objects and carries out the answer; a
refusal is the close code the gateway sends (docs/protocol.md §2, §7).

A **session** is created by each successful Identify. It owns a strictly increasing ``s``
counter (READY takes the first value) and a replay buffer holding every dispatch frame it
accepted. It is *attached* to at most one socket (``sock``, an opaque handle here): the one that
identified or last resumed it.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

from qqconn.testing.payloads import compact, random_token

__all__ = ["CONCURRENCY_WINDOW_S", "Session", "SessionBook", "TokenBook", "shard_id_of"]

#: ``max_concurrency`` counts session starts per this many seconds (docs/protocol.md §3.2).
CONCURRENCY_WINDOW_S: Final = 5.0
_QQBOT: Final = "QQBot "

S = TypeVar("S")


class TokenBook:
    """Access tokens: issued, valid until expiry, rotated in the last ``refresh_window_s``.

    The real endpoint returns the same token until its last 60 s; then it issues a new one while
    the old one stays valid until it expires (docs/protocol.md §3.1).
    """

    def __init__(self, rng: random.Random, *, ttl_s: float, refresh_window_s: float) -> None:
        self._rng = rng
        self.ttl_s = ttl_s
        self.refresh_window_s = refresh_window_s
        self._expiry: dict[str, float] = {}  # token -> expiry (monotonic)
        self._current: str | None = None
        #: Every token ever issued, revoked or not: records mask all of them.
        self._ever: set[str] = set()

    def issue(self, now: float) -> str:
        for old in [t for t, exp in self._expiry.items() if exp <= now]:
            del self._expiry[old]
        token = random_token(self._rng)
        self._expiry[token] = now + self.ttl_s
        self._current = token
        self._ever.add(token)
        return token

    def for_request(self, now: float) -> tuple[str, float]:
        """The token the endpoint hands out at ``now`` and its remaining lifetime (s)."""
        token = self._current
        if token is None or self._expiry.get(token, now) - now <= self.refresh_window_s:
            token = self.issue(now)
        return token, self._expiry[token] - now

    def rotate(self, now: float, *, revoke_old: bool) -> str:
        if revoke_old:
            self._expiry.clear()
        return self.issue(now)

    def revoke_all(self) -> None:
        self._expiry.clear()
        self._current = None

    def is_valid(self, token: str, now: float) -> bool:
        expiry = self._expiry.get(token)
        return expiry is not None and expiry > now

    def authorizes(self, header: str, now: float) -> bool:
        """An HTTP ``Authorization`` value: only ``QQBot <valid token>``."""
        return header.startswith(_QQBOT) and self.is_valid(header[len(_QQBOT) :], now)

    def gateway_auth(self, raw: object, now: float, *, app_id: str, legacy: bool) -> bool:
        """An Identify/Resume ``token``: ``QQBot <token>``; with ``legacy`` also
        ``Bot <app_id>.<token>`` and a bare token (docs/protocol.md §1.4)."""
        if not isinstance(raw, str):
            return False
        if raw.startswith(_QQBOT):
            return self.is_valid(raw[len(_QQBOT) :], now)
        if legacy:
            prefix = f"Bot {app_id}."
            return self.is_valid(raw[len(prefix) :] if raw.startswith(prefix) else raw, now)
        return False

    def mask(self, text: str) -> str:
        """``text`` with every token ever issued replaced by ``***``."""
        for token in self._ever:
            if token in text:
                text = text.replace(token, "***")
        return text


@dataclass(eq=False, slots=True)
class Session(Generic[S]):
    session_id: str
    shard: object
    intents: int
    seq: int = 0
    #: ``(s, frame text)`` of every dispatch accepted, READY excluded.
    buffer: list[tuple[int, str]] = field(default_factory=list)
    #: The socket the session is attached to, if any.
    sock: S | None = None

    def missed(self, seq: int) -> list[str]:
        """Frames a Resume from ``seq`` must replay, in order."""
        return [text for s, text in self.buffer if s > seq]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class SessionBook(Generic[S]):
    """Every session the gateway knows, the current one, and the session-start budget."""

    def __init__(self, rng: random.Random, *, session_start_total: int, max_concurrency: int):
        self._rng = rng
        self.sessions: dict[str, Session[S]] = {}
        self.current: Session[S] | None = None
        self.session_start_total = session_start_total
        #: Decremented by every successful Identify; reported by ``/gateway/bot``.
        self.session_start_remaining = session_start_total
        self.max_concurrency = max_concurrency
        #: The window ``max_concurrency`` counts starts in (tests scale it down).
        self.identify_window_s: float = CONCURRENCY_WINDOW_S
        #: What ``/gateway/bot`` reports as ``reset_after``; ``remaining`` comes back to
        #: ``total`` once that much time has passed since it was set.
        self.reset_after_ms = 86_400_000
        self.reset_at = float("inf")
        #: Every accepted Identify: (monotonic time, shard id); and every refused one.
        self.identify_log: list[tuple[float, int]] = []
        self.refused_log: list[tuple[float, int, str]] = []
        #: The newest session of each shard id (a session per shard, as QQ keeps them).
        self.by_shard: dict[int, Session[S]] = {}

    # -- Identify ----------------------------------------------------------------------------

    @staticmethod
    def intents_of(data: dict[str, Any]) -> int | None:
        """The Identify's intents, or None when they are not a whole number ≥ 0 (→ 4013)."""
        intents = data.get("intents")
        if isinstance(intents, int) and not isinstance(intents, bool) and intents >= 0:
            return intents
        return None

    def start_refused(self, now: float, shard_id: int = 0) -> str | None:
        """Why a session start of ``shard_id`` now breaks ``session_start_limit`` (→ 4008),
        or None: ``remaining`` is 0, ``max_concurrency`` starts already happened in the
        window, or one of the same bucket ``shard_id % max_concurrency`` did."""
        if now >= self.reset_at:
            self.session_start_remaining = self.session_start_total
            self.reset_at = float("inf")
        if self.session_start_remaining <= 0:
            return "session_start_limit.remaining is 0"
        window = self.identify_window_s
        recent = [(t, s) for t, s in self.identify_log if now - t < window]
        if len(recent) >= self.max_concurrency:
            return f"{len(recent)} session starts in the last {window:g} s"
        bucket = shard_id % self.max_concurrency
        if any(s % self.max_concurrency == bucket for _, s in recent):
            return f"bucket {bucket} already started a session in the last {window:g} s"
        return None

    def create(self, now: float, *, shard: object, intents: int) -> Session[S]:
        """A new session (``s`` = 1 for READY), now the current one; counts one session start
        (in ``identify_log``, which :meth:`start_refused` judges the next start by)."""
        self.identify_log.append((now, shard_id_of(shard) or 0))
        self.session_start_remaining = max(0, self.session_start_remaining - 1)
        session_id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        session: Session[S] = Session(session_id=session_id, shard=shard, intents=intents, seq=1)
        self.sessions[session_id] = session
        self.current = session
        shard_id = shard_id_of(shard)
        if shard_id is not None:
            self.by_shard[shard_id] = session
        return session

    def shard_count(self) -> int | None:
        """The shard count the live sessions Identified with (None: no session yet)."""
        counts = [shard_count_of(s.shard) for s in self.by_shard.values()]
        return max((c for c in counts if c is not None), default=None)

    def route(self, guild_id: int) -> int:
        """The shard a guild's events go to: ``(guild_id >> 22) % shards`` (docs/protocol.md
        §9); shards is the count the sessions Identified with (1 before any)."""
        return (guild_id >> 22) % (self.shard_count() or 1)

    # -- Resume ------------------------------------------------------------------------------

    def judge_resume(self, data: dict[str, Any]) -> tuple[Session[S], int] | int:
        """``(session, seq)`` for a Resume that may go on, else the close code refusing it:
        4006 unknown session, 4002 a ``seq`` that is not an integer, 4007 a ``seq`` ahead."""
        session_id = data.get("session_id")
        session = self.sessions.get(session_id) if isinstance(session_id, str) else None
        if session is None:
            return 4006
        seq = data.get("seq")
        seq = 0 if seq is None else seq
        if not _is_int(seq):
            return 4002
        if seq > session.seq:
            return 4007
        return session, seq

    # -- sessions ----------------------------------------------------------------------------

    def get(self, session_id: str | None) -> Session[S]:
        """A session by id (None: the current one); ``LookupError`` when there is none."""
        if session_id is None:
            if self.current is None:
                raise LookupError("FakeGateway: no current session (nobody identified yet)")
            return self.current
        try:
            return self.sessions[session_id]
        except KeyError:
            raise LookupError(f"FakeGateway: unknown session {session_id!r}") from None

    def expire(self, session_id: str | None) -> Session[S]:
        """Forget a session (a Resume of it then gets 4006); returns it, still attached."""
        session = self.get(session_id)
        del self.sessions[session.session_id]
        if session is self.current:
            self.current = None
        for shard_id, held in list(self.by_shard.items()):
            if held is session:
                del self.by_shard[shard_id]
        return session

    @staticmethod
    def attach(session: Session[S], sock: S) -> S | None:
        """Attach ``session`` to ``sock``; returns the socket it leaves (if another one)."""
        old = session.sock
        session.sock = sock
        return old if old is not None and old is not sock else None

    def accept(self, session: Session[S], t: str, d: Any) -> tuple[int, str]:
        """Number a dispatch, build its frame and buffer it for replay: ``(s, frame text)``."""
        session.seq += 1
        event_id = f"{t}:{random_token(self._rng, 24)}"
        text = compact({"op": 0, "s": session.seq, "t": t, "id": event_id, "d": d})
        session.buffer.append((session.seq, text))
        return session.seq, text


def shard_id_of(shard: object) -> int | None:
    """The id of an Identify's ``shard`` ``[id, count]``, or None when it is not one."""
    if isinstance(shard, list) and len(shard) == 2 and all(_is_int(x) for x in shard):
        return int(shard[0])
    return None


def shard_count_of(shard: object) -> int | None:
    """The count of an Identify's ``shard`` ``[id, count]``, or None."""
    if isinstance(shard, list) and len(shard) == 2 and all(_is_int(x) for x in shard):
        return int(shard[1])
    return None
