"""A fake QQ open platform for the webhook transport: it signs and POSTs callbacks over real HTTP.

:class:`FakePlatform` does what QQ does to a bot's callback URL (docs/protocol.md §6): the
address validation (op 13) and events (op 0), each signed with the Ed25519 key derived from
the client secret over ``X-Signature-Timestamp`` + the raw body, with ``X-Bot-Appid`` and
``User-Agent: QQBot-Callback``. A delivery that is not acknowledged (no HTTP 200 with
``{"op": 12, "d": 0}``, a timeout, a dropped connection) is retried, at most ``max_attempts``
times. ``lose_acks`` makes it ignore the first acknowledgements it gets, to force retries.

It also misbehaves on request: forged signatures (another key), replays, bodies altered after
signing, oversized, foreign app ids, unsigned, malformed JSON, and a sender that goes away in
the middle of its body. It independently checks the validation answer against the public key.

Loopback only: it posts where it is told, and tests tell it 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["Delivery", "FakePlatform", "SentRequest", "ValidationResult"]

ACK = {"op": 12, "d": 0}


def _seed(secret: str) -> bytes:
    # Written again here on purpose (not imported from qqconn.webhook.core): the fake must not
    # share the code it tests.
    raw = secret.encode("utf-8")
    while len(raw) < 32:
        raw += raw
    return raw[:32]


@dataclass(frozen=True, slots=True)
class SentRequest:
    """One request the platform sent and what came back (status None: no answer)."""

    label: str
    status: int | None
    body: bytes
    error: str | None = None


@dataclass
class Delivery:
    """One event's delivery: every attempt's status, and whether it was acknowledged."""

    event_id: str
    body: bytes
    timestamp: str
    attempts: list[SentRequest] = field(default_factory=list)
    acked: bool = False


@dataclass(frozen=True, slots=True)
class ValidationResult:
    """The answer to an op 13 validation, and whether its signature checks out."""

    status: int
    plain_token: str | None
    signature: str | None
    signature_valid: bool


class FakePlatform:
    """Posts signed callbacks to ``url`` as QQ's platform would. Use as ``async with``."""

    def __init__(
        self,
        url: str,
        *,
        app_id: str,
        client_secret: str,
        max_attempts: int = 3,
        timeout_s: float = 5.0,
        retry_delay_s: float = 0.0,
        lose_acks: int = 0,
        verify: Any = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        host = urlsplit(url).hostname
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError(f"FakePlatform posts to loopback only, not {host!r}")
        self.url = url
        self.app_id = app_id
        self._key = Ed25519PrivateKey.from_private_bytes(_seed(client_secret))
        self.public_key = self._key.public_key()
        self.max_attempts = max_attempts
        self.timeout_s = timeout_s
        self.retry_delay_s = retry_delay_s
        #: how many of the coming acknowledgements to ignore (each forces one retry)
        self.lose_acks = lose_acks
        self._verify = verify
        self._clock = clock
        self._http: httpx.AsyncClient | None = None
        self._seq = 0
        #: every request sent, in order
        self.sent: list[SentRequest] = []

    async def __aenter__(self) -> FakePlatform:
        self._http = httpx.AsyncClient(timeout=self.timeout_s, trust_env=False, verify=self._verify)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # -- building requests ----------------------------------------------------------------------

    def sign(self, timestamp: str, body: bytes) -> str:
        """The hex signature QQ sends in ``X-Signature-Ed25519``."""
        return self._key.sign(timestamp.encode() + body).hex()

    def timestamp(self) -> str:
        return str(int(self._clock()))

    def headers(
        self,
        body: bytes,
        *,
        timestamp: str | None = None,
        app_id: str | None = None,
        signature: str | None = None,
        signed: bool = True,
    ) -> dict[str, str]:
        """The headers QQ sends with ``body``; override any part to misbehave."""
        ts = timestamp if timestamp is not None else self.timestamp()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "QQBot-Callback",
            "X-Bot-Appid": self.app_id if app_id is None else app_id,
        }
        if signed:
            headers["X-Signature-Timestamp"] = ts
            headers["X-Signature-Method"] = "Ed25519"
            headers["X-Signature-Ed25519"] = (
                signature if signature is not None else self.sign(ts, body)
            )
        return headers

    def event_body(
        self,
        t: str = "GROUP_AT_MESSAGE_CREATE",
        d: Any = None,
        *,
        event_id: str | None = None,
        seq: int | None = None,
    ) -> tuple[str, bytes]:
        """``(event_id, body)`` of an op 0 event (a fresh id and the next ``s`` by default)."""
        if seq is None:
            self._seq += 1
            seq = self._seq
        event_id = event_id if event_id is not None else f"{t}:{uuid.uuid4()}"
        if d is None:
            d = {"id": f"msg-{seq}", "content": f"hello {seq}", "timestamp": self.timestamp()}
        doc = {"op": 0, "id": event_id, "s": seq, "t": t, "d": d}
        return event_id, json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()

    # -- sending --------------------------------------------------------------------------------

    async def post(
        self, body: bytes, headers: Mapping[str, str], label: str = "post"
    ) -> SentRequest:
        """POST ``body`` with exactly ``headers``; a transport error is recorded, not raised."""
        assert self._http is not None, "use FakePlatform as `async with`"
        try:
            response = await self._http.post(self.url, content=body, headers=dict(headers))
            sent = SentRequest(label, response.status_code, response.content)
        except httpx.HTTPError as exc:
            sent = SentRequest(label, None, b"", f"{type(exc).__name__}: {exc}"[:200])
        self.sent.append(sent)
        return sent

    async def validate(
        self, plain_token: str | None = None, event_ts: str | None = None
    ) -> ValidationResult:
        """Send the op 13 validation; check the answer's signature with the public key."""
        token = plain_token if plain_token is not None else uuid.uuid4().hex[:20]
        ts = event_ts if event_ts is not None else self.timestamp()
        body = json.dumps(
            {"d": {"plain_token": token, "event_ts": ts}, "op": 13}, separators=(",", ":")
        ).encode()
        sent = await self.post(body, self.headers(body), "validation")
        got_token = got_signature = None
        valid = False
        with contextlib.suppress(ValueError, TypeError, KeyError):
            doc = json.loads(sent.body)
            got_token, got_signature = doc["plain_token"], doc["signature"]
            try:
                self.public_key.verify(bytes.fromhex(got_signature), (ts + token).encode())
                valid = got_token == token
            except InvalidSignature:
                valid = False
        return ValidationResult(sent.status or 0, got_token, got_signature, valid)

    async def deliver(
        self,
        t: str = "GROUP_AT_MESSAGE_CREATE",
        d: Any = None,
        *,
        event_id: str | None = None,
        seq: int | None = None,
    ) -> Delivery:
        """Post one event; retry (at most ``max_attempts`` in all) until it is acknowledged."""
        event_id, body = self.event_body(t, d, event_id=event_id, seq=seq)
        ts = self.timestamp()
        delivery = Delivery(event_id, body, ts)
        headers = self.headers(body, timestamp=ts)
        for attempt in range(self.max_attempts):
            if attempt and self.retry_delay_s:
                await asyncio.sleep(self.retry_delay_s)
            sent = await self.post(body, headers, "event" if attempt == 0 else "retry")
            delivery.attempts.append(sent)
            if self._is_ack(sent):
                if self.lose_acks > 0:
                    self.lose_acks -= 1  # pretend this answer never arrived
                    continue
                delivery.acked = True
                break
        return delivery

    @staticmethod
    def _is_ack(sent: SentRequest) -> bool:
        if sent.status != 200:
            return False
        try:
            return bool(json.loads(sent.body) == ACK)
        except ValueError:
            return False

    async def replay(self, delivery: Delivery) -> SentRequest:
        """Send a delivered event again, byte for byte (same signature, same timestamp)."""
        headers = self.headers(delivery.body, timestamp=delivery.timestamp)
        return await self.post(delivery.body, headers, "replayed")

    # -- misbehaving ----------------------------------------------------------------------------

    async def send_forged(self) -> SentRequest:
        """An event signed with another key (someone who does not have the secret)."""
        _, body = self.event_body()
        ts = self.timestamp()
        other = Ed25519PrivateKey.generate().sign(ts.encode() + body).hex()
        return await self.post(body, self.headers(body, timestamp=ts, signature=other), "forged")

    async def send_altered(self) -> SentRequest:
        """An event whose body was cut short after it was signed (truncated in transit)."""
        _, body = self.event_body()
        ts = self.timestamp()
        headers = self.headers(body, timestamp=ts)
        return await self.post(body[: len(body) // 2], headers, "truncated")

    async def send_oversized(self, size: int) -> SentRequest:
        """A properly signed event whose body is ``size`` bytes."""
        filler = "x" * max(0, size - 120)
        _, body = self.event_body(d={"content": filler})
        return await self.post(body, self.headers(body), "oversized")

    async def send_foreign_app(self) -> SentRequest:
        """An event for another bot (its app id; signed with our key, even)."""
        _, body = self.event_body()
        return await self.post(body, self.headers(body, app_id="999999999"), "foreign_app")

    async def send_without_app_id(self) -> SentRequest:
        _, body = self.event_body()
        headers = self.headers(body)
        del headers["X-Bot-Appid"]
        return await self.post(body, headers, "no_app_id")

    async def send_unsigned(self, op: int = 0) -> SentRequest:
        """No signature headers at all (op 13 too: an unsigned validation is refused)."""
        if op == 13:
            body = b'{"d":{"plain_token":"abc","event_ts":"1"},"op":13}'
        else:
            _, body = self.event_body()
        return await self.post(body, self.headers(body, signed=False), f"unsigned_op{op}")

    async def send_bad_signature_encoding(self) -> SentRequest:
        _, body = self.event_body()
        return await self.post(body, self.headers(body, signature="zz" * 64), "signature_not_hex")

    async def send_signed(self, body: bytes, label: str) -> SentRequest:
        """Any body, properly signed (for malformed JSON and unknown ops)."""
        return await self.post(body, self.headers(body), label)

    async def send_wrong_method(self) -> SentRequest:
        assert self._http is not None
        response = await self._http.get(self.url, headers={"X-Bot-Appid": self.app_id})
        sent = SentRequest("wrong_method", response.status_code, response.content)
        self.sent.append(sent)
        return sent

    async def send_to(self, path: str) -> SentRequest:
        """A signed event to another path on the same server."""
        assert self._http is not None
        _, body = self.event_body()
        parts = urlsplit(self.url)
        url = f"{parts.scheme}://{parts.netloc}{path}"
        response = await self._http.post(url, content=body, headers=self.headers(body))
        sent = SentRequest("wrong_path", response.status_code, response.content)
        self.sent.append(sent)
        return sent

    async def send_incomplete(self) -> SentRequest:
        """Declare a body, send half of it, and go away (over a raw socket)."""
        parts = urlsplit(self.url)
        _, body = self.event_body()
        headers = self.headers(body)
        head = [f"POST {parts.path or '/'} HTTP/1.1", f"Host: {parts.netloc}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        head.append(f"Content-Length: {len(body)}")
        _reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body[: len(body) // 2])
            await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        sent = SentRequest("incomplete", None, b"")
        self.sent.append(sent)
        return sent
