"""A callback request's verdict, in two steps: the head before the body is read, then the
signature over timestamp + body before a byte of JSON is parsed (docs/protocol.md §6).

:class:`RequestVerifier` says what a request is: a :class:`Validation`, an :class:`Event`, a
:class:`HeartbeatProbe` or a :class:`Refused` carrying a :class:`RefusalKind` (each kind has
exactly one HTTP status). Pure: no I/O, no clock; see :mod:`qqconn.webhook.core` for why the
validation request must be signed too.
"""

from __future__ import annotations

import binascii
import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from qqconn.errors import ConfigError
from qqconn.protocol import Dispatch, shorten
from qqconn.webhook.keys import SigningKey

__all__ = [
    "ACK_BODY",
    "DEFAULT_MAX_BODY_BYTES",
    "SIGNATURE_BYTES",
    "Event",
    "Headers",
    "HeartbeatProbe",
    "RefusalKind",
    "Refused",
    "RequestVerifier",
    "SignedHead",
    "Validation",
    "Verdict",
    "snapshot_counts",
]

#: Ed25519 signatures are 64 bytes (128 hex digits).
SIGNATURE_BYTES = 64
#: A callback body larger than this is refused with 413 before it is read in full. QQ events
#: are a few KiB; a megabyte leaves room for long messages with many attachments.
DEFAULT_MAX_BODY_BYTES = 1024 * 1024

#: The op 12 acknowledgement: "received" (``d`` 1 would ask the platform to retry).
ACK_BODY = b'{"op":12,"d":0}'

_OP_DISPATCH = 0
_OP_HEARTBEAT = 1
_OP_VALIDATION = 13


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


def snapshot_counts(refusals: Mapping[RefusalKind, int]) -> dict[str, Any]:
    """Refusal counts keyed by kind name, every kind present (zeros included)."""
    return {kind.value: refusals.get(kind, 0) for kind in RefusalKind}
