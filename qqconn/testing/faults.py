"""Fault switches of the fake gateway: plain attributes a test flips at any time.

Each attribute is read when it matters (at the next socket open, the next frame, the next
tick of the 10 ms watchdog), so flipping one affects the connection already open. Mode strings
are checked on assignment: a typo raises ``ValueError`` at once rather than being ignored.

Per-socket faults: :meth:`Faults.for_socket` and :meth:`Faults.for_next_sockets` set the
switches of :data:`PER_SOCKET` for one connection (by index) or for each of the next ``n``
connections opened; such a value wins over the attribute for that socket only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final, Literal, get_args

__all__ = [
    "MISSING",
    "NO_OVERRIDE",
    "PER_SOCKET",
    "Faults",
    "GatewayEndpointMode",
    "ResumeMode",
    "TokenEndpointMode",
]


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name

    def __reduce__(self) -> str:
        return self._name


#: ``faults.hello_interval = MISSING`` sends Hello with ``d`` lacking ``heartbeat_interval``.
MISSING: Final[Any] = _Sentinel("MISSING")
#: Default of ``faults.hello_interval``: announce the gateway's ``heartbeat_interval_ms``.
NO_OVERRIDE: Final[Any] = _Sentinel("NO_OVERRIDE")

TokenEndpointMode = Literal["ok", "http500", "error_body", "hang"]
GatewayEndpointMode = Literal["ok", "http500", "hang"]
ResumeMode = Literal["ok", "4006", "op9", "4902", "accept_then_close"]

_MODES: Final[dict[str, tuple[str, ...]]] = {
    "token_endpoint": get_args(TokenEndpointMode),
    "gateway_endpoint": get_args(GatewayEndpointMode),
    "resume": get_args(ResumeMode),
}


#: The switches that can be set per socket (the others belong to the REST side or count
#: sockets themselves).
PER_SOCKET: Final[frozenset[str]] = frozenset(
    {
        "ack",
        "silent",
        "hello_interval",
        "hello_delay_s",
        "drop_early_frames",
        "resume",
        "identify_close",
        "allowed_intents",
        "intents_close_code",
        "legacy_tokens",
        "heartbeat_timeout_s",
        "heartbeat_timeout_intervals",
        "drop_session_on_client_close",
        "reconnect_every_s",
        "reconnect_close_after_s",
    }
)


@dataclass
class Faults:
    """What the fake gateway does wrong. The defaults are a well-behaved gateway."""

    #: Answer client heartbeats with op 11. False = zombie: dispatches still flow, no ACKs.
    ack: bool = True
    #: Total silence on every open socket: nothing is written (no Hello, ACK, dispatch, and
    #: not even WebSocket pongs or close-frame replies: a half-open server). Incoming frames
    #: are recorded but not acted on; dispatches are still buffered for a later Resume.
    #: Sockets opened meanwhile complete the HTTP upgrade and then hear nothing. The explicit
    #: fault actions (``send_raw``, ``close``, ``send_reconnect``, ``send_invalid_session``,
    #: ``drop``) still go out: they are the test speaking.
    silent: bool = False
    #: ``heartbeat_interval`` for the Hello of new sockets: any JSON value (0, -1, "NaN",
    #: 1e12, None for null), ``MISSING`` to omit the key, ``NO_OVERRIDE`` for the configured one.
    hello_interval: Any = NO_OVERRIDE
    #: Delay between the upgrade and Hello (lets a test send frames "before Hello").
    hello_delay_s: float = 0.0
    #: Drop (no close frame) a socket whose first frame arrives before Hello was sent; the
    #: reported reaction of the real gateway to botgo-style early Identify (UNCERTAIN).
    drop_early_frames: bool = False
    #: ``POST /app/getAppAccessToken``: "ok", "http500", "error_body" (HTTP 200 with
    #: ``code``/``message``), "hang" (never answers until the client gives up).
    token_endpoint: TokenEndpointMode = "ok"
    #: ``GET /gateway`` and ``/gateway/bot``: "ok", "http500", "hang".
    gateway_endpoint: GatewayEndpointMode = "ok"
    #: How Resume is refused. "ok": valid Resumes succeed, unknown sessions get 4006, a seq
    #: ahead of the session gets 4007. Any other mode refuses every Resume that way: "4006",
    #: "4902" ("reset by resume"), "op9" (op 9 ``false``, socket left open so the client can
    #: Identify on it), "accept_then_close" (nothing sent, close 1000 at once).
    resume: ResumeMode = "ok"
    #: Close every Identify with this code (4914, 4004, 4013, ...). None = off.
    identify_close: int | None = None
    #: Intent mask the bot may use. An Identify asking for more gets op 9 ``false`` and then
    #: a close with ``intents_close_code``. None = everything allowed.
    allowed_intents: int | None = None
    #: 4903 "create session error" (observed) or 4014 "disallowed intents" (documented).
    intents_close_code: int = 4903
    #: Accept the legacy Identify/Resume token forms ``"Bot <app_id>.<token>"`` and a bare
    #: ``"<token>"`` besides ``"QQBot <token>"``.
    legacy_tokens: bool = False
    #: Close 4008 an Identify when ``session_start_remaining`` is 0 or when
    #: ``max_concurrency`` Identifies already happened in the last 5 s.
    enforce_session_limit: bool = False
    #: Close 4009 "Session timed out" a socket that sent no heartbeat for this long (counted
    #: from the socket's opening for the first one). None = off (then
    #: ``heartbeat_timeout_intervals`` decides).
    heartbeat_timeout_s: float | None = None
    #: The real gateway's own watchdog (docs/protocol.md §7 item 6): close 4009 a socket that
    #: sent no heartbeat for this many heartbeat intervals (the interval its Hello announced,
    #: or the gateway's when that was not a usable number). About one and a half, as reported
    #: of the real gateway. None = off. ``heartbeat_timeout_s``, when set, wins.
    heartbeat_timeout_intervals: float | None = 1.5
    #: A client's own close 1000 or 1001 ends its session, as on gateways of this family: a
    #: later Resume of it is refused with 4006. False: the session stays resumable after any
    #: close (kinder than the real gateway).
    drop_session_on_client_close: bool = True
    #: A socket opened while ``silent`` is on gets its Hello once ``silent`` is lifted (the
    #: fault ends cleanly for it too). False: it never gets one.
    hello_after_silence: bool = True
    #: Rotate every identified/resumed socket this long after its Identify/Resume: op 7, then
    #: close 4009 unless the client closed within ``reconnect_close_after_s``. None = off.
    reconnect_every_s: float | None = None
    reconnect_close_after_s: float = 0.2
    #: Sockets still to be closed by :meth:`close_new_sockets` (counts down; 0 = off).
    close_new_sockets_left: int = 0
    close_new_sockets_after_s: float = 0.0
    #: None = drop without a close frame.
    close_new_sockets_code: int | None = None
    #: Closes :meth:`close_new_sockets` scheduled on sockets already open whose socket is not
    #: gone yet. With ``close_new_sockets_left`` at 0 as well, the burst is spent: no close of
    #: it can still reach a client. Kept by the gateway, not reset.
    close_new_sockets_pending: int = field(default=0, init=False)
    #: Per-socket values by connection index (see :meth:`for_socket`); read with :meth:`value`.
    _by_socket: dict[int, dict[str, Any]] = field(default_factory=dict, init=False, repr=False)
    #: ``[count left, values]`` queued by :meth:`for_next_sockets`, oldest first.
    _next: list[list[Any]] = field(default_factory=list, init=False, repr=False)

    def __setattr__(self, name: str, value: Any) -> None:
        self._check(name, value)
        super().__setattr__(name, value)

    @staticmethod
    def _check(name: str, value: Any) -> None:
        allowed = _MODES.get(name)
        if allowed is not None and value not in allowed:
            raise ValueError(f"faults.{name}: {value!r} is not one of {', '.join(allowed)}")

    def close_new_sockets(self, after_s: float, count: int, code: int | None = None) -> None:
        """Close each of the next ``count`` new sockets ``after_s`` after it opens: with a close
        frame carrying ``code``, or dropped without one when ``code`` is None. 0 turns it off."""
        if after_s < 0 or count < 0:
            raise ValueError("close_new_sockets: after_s and count must be >= 0")
        self.close_new_sockets_after_s = after_s
        self.close_new_sockets_code = code
        self.close_new_sockets_left = count

    @property
    def close_new_sockets_spent(self) -> bool:
        """No close of :meth:`close_new_sockets` is still to come: none left to schedule and
        none scheduled that has not happened (or found its socket gone)."""
        return self.close_new_sockets_left == 0 and self.close_new_sockets_pending == 0

    def spend_close_new_socket(self) -> None:
        """Called by the gateway when the socket of a scheduled close is gone."""
        self.close_new_sockets_pending -= 1

    def for_socket(self, index: int, **switches: Any) -> None:
        """Set switches of :data:`PER_SOCKET` for connection ``index`` only (0 is the first
        connection the gateway accepted), open now or opened later: ``faults.for_socket(2,
        ack=False)`` makes the third socket a zombie and leaves the others alone."""
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ValueError(f"for_socket: index must be a whole number >= 0, got {index!r}")
        self._by_socket.setdefault(index, {}).update(self._per_socket(switches))

    def for_next_sockets(self, count: int, **switches: Any) -> None:
        """Set switches of :data:`PER_SOCKET` for each of the next ``count`` sockets opened
        (queued after earlier calls' sockets): ``faults.for_next_sockets(1, silent=True)``."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"for_next_sockets: count must be a whole number >= 1, got {count!r}")
        self._next.append([count, self._per_socket(switches)])

    def socket_opened(self, index: int) -> None:
        """Called by the gateway when connection ``index`` opens: it takes its queued values."""
        if not self._next:
            return
        entry = self._next[0]
        entry[0] -= 1
        if entry[0] <= 0:
            self._next.pop(0)
        mine = self._by_socket.setdefault(index, {})
        for name, value in entry[1].items():
            mine.setdefault(name, value)  # for_socket(index, ...) is more specific: it wins

    def value(self, name: str, index: int) -> Any:
        """The switch ``name`` as it applies to connection ``index``."""
        mine = self._by_socket.get(index)
        if mine is not None and name in mine:
            return mine[name]
        return getattr(self, name)

    def _per_socket(self, switches: Mapping[str, Any]) -> dict[str, Any]:
        if not switches:
            raise ValueError("name at least one switch, e.g. ack=False")
        for name, value in switches.items():
            if name not in PER_SOCKET:
                raise ValueError(
                    f"faults.{name} cannot be set per socket; one of {', '.join(sorted(PER_SOCKET))}"
                )
            self._check(name, value)
        return dict(switches)

    def reset(self) -> None:
        """Back to a well-behaved gateway (per-socket values included)."""
        for f in fields(self):
            if f.init:
                setattr(self, f.name, f.default)
        self._by_socket.clear()
        self._next.clear()
