"""The webhook transport's sans-I/O core: keys, request verdicts, the dedupe window, the lifecycle.

No sockets, no event loop, no clock: the ASGI layer (:mod:`qqconn.webhook.asgi`) reads the
request, asks this module what it is, and stamps every call with the time it read itself. The
facts come from ``docs/protocol.md`` §6 and ``docs/behaviour.md`` rule 23.

Theory of operation
===================

The signing key
    QQ derives one Ed25519 key pair from the bot's client secret: the secret's UTF-8 bytes,
    repeated until there are at least 32 of them and cut to 32, are the private seed. The
    platform signs every callback with the private half; the bot answers the address
    validation (op 13) by signing with it too. :class:`SigningKey` holds both halves and never
    shows the seed.

A request's verdict, in two steps
    :meth:`RequestVerifier.check_head` looks at what arrives before the body (path, method,
    ``X-Bot-Appid``, ``Content-Length``, the two signature headers) so that a request that can
    never be accepted is refused before a byte of its body is read.
    :meth:`RequestVerifier.check_body` then verifies the Ed25519 signature over
    ``X-Signature-Timestamp`` + the raw body *before* parsing a byte of JSON, and returns what
    the request is: a :class:`Validation`, an :class:`Event`, a :class:`HeartbeatProbe` or a
    :class:`Refused` carrying a :class:`RefusalKind` (each kind has exactly one HTTP status).

Why the validation request must be signed too
    The answer to op 13 is our signature over ``event_ts + plain_token``, both chosen by the
    sender. Answering an unsigned op 13 would be a signing oracle: anyone could have us sign
    ``timestamp + body`` of an event they made up, then post that event with our own valid
    signature. So op 13 is verified like everything else (the official Go SDK does the same).

Exactly once, within a window
    The platform retries a delivery it did not see acknowledged, with the same event ``id``.
    :class:`DedupeWindow` remembers the ids it has delivered, at most ``max_ids`` of them and
    none older than ``window_s``; an id it remembers is acknowledged and not delivered again.
    An id is recorded only after the host's callback has returned (see "when to acknowledge"
    in :mod:`qqconn.webhook.asgi`), and a second request for an id that is being delivered
    waits for the first instead of delivering it twice. With a :class:`DedupeStore` the
    window survives a restart.
"""

from __future__ import annotations

import binascii
import enum
import json
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from qqconn.errors import ConfigError
from qqconn.machine import State
from qqconn.protocol import Dispatch, shorten

__all__ = [
    "ACK_BODY",
    "DEFAULT_DEDUPE_MAX_IDS",
    "DEFAULT_DEDUPE_WINDOW_S",
    "DEFAULT_MAX_BODY_BYTES",
    "LIFECYCLE",
    "SEED_BYTES",
    "Admission",
    "DedupeStore",
    "DedupeWindow",
    "Event",
    "HeartbeatProbe",
    "RefusalKind",
    "Refused",
    "RequestVerifier",
    "SignedHead",
    "SigningKey",
    "Validation",
    "Verdict",
    "is_terminal",
    "next_state",
    "signing_seed",
]

#: Ed25519 seeds are 32 bytes.
SEED_BYTES = 32
#: Ed25519 signatures are 64 bytes (128 hex digits).
SIGNATURE_BYTES = 64
#: A callback body larger than this is refused with 413 before it is read in full. QQ events
#: are a few KiB; a megabyte leaves room for long messages with many attachments.
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
#: The dedupe window's bound in time: an id delivered longer ago than this may be delivered
#: again if the platform sends it again.
DEFAULT_DEDUPE_WINDOW_S = 3600.0
#: The dedupe window's bound in count: only the most recent ids are remembered.
DEFAULT_DEDUPE_MAX_IDS = 50_000

#: The op 12 acknowledgement: "received" (``d`` 1 would ask the platform to retry).
ACK_BODY = b'{"op":12,"d":0}'

_OP_DISPATCH = 0
_OP_HEARTBEAT = 1
_OP_VALIDATION = 13


# -- the key --------------------------------------------------------------------------------------


def signing_seed(client_secret: str) -> bytes:
    """The 32-byte Ed25519 seed QQ derives from ``client_secret`` (repeated, then cut to 32).

    Raises :class:`~qqconn.errors.ConfigError` for an empty secret (it has no seed).
    """
    raw = client_secret.encode("utf-8") if isinstance(client_secret, str) else b""
    if not raw:
        raise ConfigError("client_secret", "must be a non-empty string")
    repeats = -(-SEED_BYTES // len(raw))  # ceiling division
    return (raw * repeats)[:SEED_BYTES]


class SigningKey:
    """The bot's Ed25519 key pair, derived from its client secret. Never shows the seed."""

    __slots__ = ("_private", "_public", "public_bytes")

    def __init__(self, client_secret: str) -> None:
        self._private = Ed25519PrivateKey.from_private_bytes(signing_seed(client_secret))
        self._public = self._private.public_key()
        #: The 32-byte public key (safe to show: it only verifies).
        self.public_bytes = self._public.public_bytes(Encoding.Raw, PublicFormat.Raw)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte signature of ``message``."""
        return self._private.sign(message)

    def verify(self, signature: bytes, message: bytes) -> bool:
        """Does ``signature`` sign ``message`` under this key's public half?"""
        try:
            self._public.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def __repr__(self) -> str:
        return f"SigningKey(public={self.public_bytes.hex()})"


# -- verdicts -------------------------------------------------------------------------------------


class RefusalKind(enum.Enum):
    """Every way a callback request is refused. ``status`` is its HTTP status."""

    #: the request is for another path than the callback's
    WRONG_PATH = "wrong_path"
    #: not a POST
    WRONG_METHOD = "wrong_method"
    #: no ``X-Bot-Appid`` header
    APP_ID_MISSING = "app_id_missing"
    #: ``X-Bot-Appid`` names another bot
    APP_ID_FOREIGN = "app_id_foreign"
    #: the body (declared or read) is larger than ``max_body_bytes``
    TOO_LARGE = "too_large"
    #: no ``X-Signature-Ed25519`` or no ``X-Signature-Timestamp``
    UNSIGNED = "unsigned"
    #: the signature header is not 64 bytes of hex, is repeated, or is not canonical
    SIGNATURE_MALFORMED = "signature_malformed"
    #: the signature does not verify over timestamp + body (forged, or the body was altered)
    SIGNATURE_INVALID = "signature_invalid"
    #: the body ended before ``Content-Length`` bytes (the sender went away)
    BODY_INCOMPLETE = "body_incomplete"
    #: signed, but not a UTF-8 JSON object
    NOT_JSON = "not_json"
    #: signed JSON, but not the shape its op requires (no ``t``, no ``plain_token``, ...)
    BAD_PAYLOAD = "bad_payload"
    #: signed JSON with an op a callback never carries
    UNKNOWN_OP = "unknown_op"

    @property
    def status(self) -> int:
        """The HTTP status this refusal is answered with."""
        return _STATUS[self]


_STATUS: dict[RefusalKind, int] = {
    RefusalKind.WRONG_PATH: 404,
    RefusalKind.WRONG_METHOD: 405,
    RefusalKind.APP_ID_MISSING: 403,
    RefusalKind.APP_ID_FOREIGN: 403,
    RefusalKind.TOO_LARGE: 413,
    RefusalKind.UNSIGNED: 401,
    RefusalKind.SIGNATURE_MALFORMED: 401,
    RefusalKind.SIGNATURE_INVALID: 401,
    RefusalKind.BODY_INCOMPLETE: 400,
    RefusalKind.NOT_JSON: 400,
    RefusalKind.BAD_PAYLOAD: 400,
    RefusalKind.UNKNOWN_OP: 400,
}
assert set(_STATUS) == set(RefusalKind)


@dataclass(frozen=True, slots=True)
class Refused:
    """Refuse the request: answer ``kind.status``, log ``reason``, deliver nothing.

    ``reason`` never holds a secret; it may hold a shortened prefix of the (signed) body.
    """

    kind: RefusalKind
    reason: str

    @property
    def status(self) -> int:
        return self.kind.status

    def body(self) -> bytes:
        """The response body: the refusal kind, nothing the sender could learn more from."""
        return json.dumps({"error": self.kind.value}, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class SignedHead:
    """A request whose head passed: the decoded signature, the timestamp, the declared length."""

    signature: bytes
    timestamp: bytes
    content_length: int | None


@dataclass(frozen=True, slots=True)
class Validation:
    """Op 13, the callback address validation: answer with :meth:`answer`."""

    plain_token: str
    event_ts: str

    def answer(self, key: SigningKey) -> bytes:
        """``{"plain_token", "signature"}``: the hex signature of ``event_ts + plain_token``."""
        signature = key.sign((self.event_ts + self.plain_token).encode("utf-8")).hex()
        return json.dumps(
            {"plain_token": self.plain_token, "signature": signature},
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode("utf-8")


@dataclass(frozen=True, slots=True)
class Event:
    """Op 0: deliver ``dispatch`` (once per ``dispatch.event_id``), then acknowledge with op 12."""

    dispatch: Dispatch


@dataclass(frozen=True, slots=True)
class HeartbeatProbe:
    """Op 1 on the callback: answered with op 11 carrying ``seq``, as the official Go SDK does."""

    seq: int | None

    def answer(self) -> bytes:
        return json.dumps({"op": 11, "d": self.seq}, separators=(",", ":")).encode()


Verdict = Validation | Event | HeartbeatProbe | Refused

#: A header list as ASGI gives it: lower-case names, raw values.
Headers = Sequence[tuple[bytes, bytes]]


def _header(headers: Headers, name: bytes) -> list[bytes]:
    """Every value of header ``name`` (ASGI names are lower-case), in order."""
    return [value for key, value in headers if key == name]


def _seq(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


class RequestVerifier:
    """Turns a callback request into a :data:`Verdict`. Pure: no I/O, no clock.

    ``path`` is the callback's path, or None to accept any path (when a router in front of the
    app already chose it). ``max_body_bytes`` bounds the body.
    """

    def __init__(
        self,
        *,
        app_id: str,
        client_secret: str,
        path: str | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        if not isinstance(app_id, str) or not app_id.strip():
            raise ConfigError("app_id", "must be a non-empty string")
        if path is not None and (not isinstance(path, str) or not path.startswith("/")):
            raise ConfigError("path", f"must start with '/', got {path!r}")
        if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int):
            raise ConfigError("max_body_bytes", f"must be an integer, got {max_body_bytes!r}")
        if max_body_bytes < 1024:
            raise ConfigError("max_body_bytes", f"must be at least 1024, got {max_body_bytes}")
        self.app_id = app_id
        self._app_id_bytes = app_id.encode("utf-8")
        self.key = SigningKey(client_secret)
        self.path = path
        self.max_body_bytes = max_body_bytes

    def __repr__(self) -> str:
        return f"RequestVerifier(app_id={self.app_id!r}, path={self.path!r})"

    def check_head(self, method: str, path: str, headers: Headers) -> SignedHead | Refused:
        """Judge what arrives before the body. ``headers`` as ASGI gives them (lower-case)."""
        if self.path is not None and path != self.path:
            return Refused(RefusalKind.WRONG_PATH, f"path {shorten(path, 80)!r}")
        if method != "POST":
            return Refused(RefusalKind.WRONG_METHOD, f"method {shorten(method, 20)!r}")
        app_ids = _header(headers, b"x-bot-appid")
        if not app_ids:
            return Refused(RefusalKind.APP_ID_MISSING, "no X-Bot-Appid header")
        if len(app_ids) > 1:
            return Refused(RefusalKind.APP_ID_FOREIGN, "X-Bot-Appid repeated")
        if app_ids[0] != self._app_id_bytes:
            return Refused(RefusalKind.APP_ID_FOREIGN, f"X-Bot-Appid {shorten(app_ids[0], 40)!r}")
        declared = _header(headers, b"content-length")
        length: int | None = None
        # h11 has already refused a malformed or repeated Content-Length; be safe anyway.
        if len(declared) == 1 and declared[0].isdigit():
            length = int(declared[0])
            if length > self.max_body_bytes:
                return Refused(
                    RefusalKind.TOO_LARGE,
                    f"Content-Length {length} > max_body_bytes {self.max_body_bytes}",
                )
        signatures = _header(headers, b"x-signature-ed25519")
        timestamps = _header(headers, b"x-signature-timestamp")
        if not any(signatures) or not any(timestamps):
            missing = "X-Signature-Ed25519" if not any(signatures) else "X-Signature-Timestamp"
            return Refused(RefusalKind.UNSIGNED, f"no {missing} header")
        if len(signatures) > 1 or len(timestamps) > 1:
            return Refused(RefusalKind.SIGNATURE_MALFORMED, "signature header repeated")
        signature, timestamp = signatures[0], timestamps[0]
        try:
            raw = binascii.unhexlify(signature.strip())
        except (binascii.Error, ValueError):
            return Refused(RefusalKind.SIGNATURE_MALFORMED, "X-Signature-Ed25519 is not hex")
        if len(raw) != SIGNATURE_BYTES:
            return Refused(
                RefusalKind.SIGNATURE_MALFORMED,
                f"X-Signature-Ed25519 is {len(raw)} bytes, not {SIGNATURE_BYTES}",
            )
        if raw[63] & 0xE0:  # S ≥ 2^253: never a canonical Ed25519 signature
            return Refused(RefusalKind.SIGNATURE_MALFORMED, "X-Signature-Ed25519 not canonical")
        return SignedHead(raw, timestamp, length)

    def body_too_large(self, size: int) -> Refused | None:
        """The refusal for a body that has grown to ``size`` bytes while being read, if any."""
        if size > self.max_body_bytes:
            return Refused(RefusalKind.TOO_LARGE, f"body over max_body_bytes {self.max_body_bytes}")
        return None

    def check_body(self, head: SignedHead, body: bytes) -> Verdict:
        """Verify the signature over timestamp + ``body``, then say what the request is."""
        too_large = self.body_too_large(len(body))
        if too_large is not None:
            return too_large
        if head.content_length is not None and len(body) != head.content_length:
            return Refused(
                RefusalKind.BODY_INCOMPLETE,
                f"{len(body)} of {head.content_length} declared bytes",
            )
        if not self.key.verify(head.signature, head.timestamp + body):
            return Refused(RefusalKind.SIGNATURE_INVALID, f"{len(body)}-byte body")
        return self.parse(body)

    def check(self, method: str, path: str, headers: Headers, body: bytes) -> Verdict:
        """Both steps at once, for a request already read in full."""
        head = self.check_head(method, path, headers)
        if isinstance(head, Refused):
            return head
        return self.check_body(head, body)

    @staticmethod
    def parse(body: bytes) -> Verdict:
        """What a *verified* body is. Public for tests; call :meth:`check_body` instead."""
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError) as exc:
            return Refused(RefusalKind.NOT_JSON, f"{exc.__class__.__name__}: {shorten(body, 120)}")
        if not isinstance(doc, dict):
            return Refused(RefusalKind.NOT_JSON, f"not a JSON object: {shorten(body, 120)}")
        op = doc.get("op")
        if type(op) is not int:
            return Refused(
                RefusalKind.BAD_PAYLOAD, f"missing or non-integer op: {shorten(body, 120)}"
            )
        d = doc.get("d")
        if op == _OP_DISPATCH:
            t = doc.get("t")
            if not isinstance(t, str) or not t:
                return Refused(RefusalKind.BAD_PAYLOAD, f"op 0 without t: {shorten(body, 120)}")
            event_id = doc.get("id")
            if not isinstance(event_id, str) or not event_id:
                event_id = None
            return Event(Dispatch(_seq(doc.get("s")), t, d, event_id))
        if op == _OP_VALIDATION:
            if (
                not isinstance(d, dict)
                or not isinstance(d.get("plain_token"), str)
                or not isinstance(d.get("event_ts"), str)
            ):
                return Refused(
                    RefusalKind.BAD_PAYLOAD,
                    f"op 13 without plain_token/event_ts strings: {shorten(body, 120)}",
                )
            return Validation(d["plain_token"], d["event_ts"])
        if op == _OP_HEARTBEAT:
            return HeartbeatProbe(_seq(d))
        return Refused(RefusalKind.UNKNOWN_OP, f"op {op}")


# -- the dedupe window ----------------------------------------------------------------------------


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


# -- the receiver's lifecycle ---------------------------------------------------------------------

#: The webhook receiver's whole lifecycle, as data: ``(state, trigger) -> next state``. It
#: uses the connection machine's :class:`~qqconn.machine.State` so one ``on_state_change``
#: handler serves both transports: CONNECTING (binding the listening socket), ALIVE
#: (listening; events may arrive), STOPPED (asked to stop), FATAL (could not listen, or the
#: server ended by itself). A pair not in the table changes nothing.
LIFECYCLE: Mapping[tuple[State, str], State] = {
    (State.CONNECTING, "listening"): State.ALIVE,
    (State.CONNECTING, "listen_failed"): State.FATAL,
    (State.CONNECTING, "stop"): State.STOPPED,
    (State.CONNECTING, "server_ended"): State.FATAL,
    (State.ALIVE, "stop"): State.STOPPED,
    (State.ALIVE, "server_ended"): State.FATAL,
}

#: The triggers the receiver feeds :func:`next_state`.
TRIGGERS = ("listening", "listen_failed", "stop", "server_ended")
assert {trigger for _, trigger in LIFECYCLE} == set(TRIGGERS)


#: The states nothing leaves.
TERMINAL = frozenset({State.STOPPED, State.FATAL})


def is_terminal(state: State) -> bool:
    """Is ``state`` one that no trigger leaves (STOPPED, FATAL)?"""
    return state in TERMINAL


def next_state(state: State, trigger: str) -> State | None:
    """The state after ``trigger`` in ``state``, or None when the trigger changes nothing."""
    if trigger not in TRIGGERS:
        raise ValueError(f"unknown receiver trigger {trigger!r}")
    return LIFECYCLE.get((state, trigger))


def snapshot_counts(refusals: Mapping[RefusalKind, int]) -> dict[str, Any]:
    """Refusal counts keyed by kind name, every kind present (zeros included)."""
    return {kind.value: refusals.get(kind, 0) for kind in RefusalKind}
