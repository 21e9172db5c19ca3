"""The webhook transport as an ASGI application: mount it in Starlette, FastAPI, or serve it bare.

:class:`WebhookApp` is an ASGI callable (no framework needed). For each request it asks the
sans-I/O core (:mod:`qqconn.webhook.core`) for a verdict and carries it out:

* refused (unsigned, badly signed, another app id, oversized, malformed, wrong method or path):
  the refusal's status (401/403/413/400/405/404) with ``{"error": kind}``, one
  ``qqconn.webhook.refused`` log line, nothing delivered;
* op 13 validation: ``{"plain_token", "signature"}``;
* op 0 event: ``on_dispatch(Dispatch)`` once per event id within the dedupe window, then the
  op 12 acknowledgement ``{"op": 12, "d": 0}``. A retried delivery (an id already delivered)
  is acknowledged and not delivered again.

When to acknowledge: after the callback
=======================================

The platform retries a delivery it did not see acknowledged. The app answers op 12 only after
``on_dispatch`` has returned, and records the id as delivered at that same moment. So:

* a crash (or a shutdown) while the callback runs leaves the event unacknowledged and
  unrecorded: the platform retries and the event is delivered after the restart (at least
  once across a crash, never lost);
* without a crash, each id is delivered exactly once within the window: a retry that comes
  while the first delivery is still in the callback waits for it and is then acknowledged.

The price is that the callback's time is inside the platform's timeout: keep ``on_dispatch``
short (hand the event to a queue of your own if the work is long), or the platform will retry
deliveries that merely took long. Acknowledging *before* the callback would trade this for
losing the event whenever the process dies between the answer and the callback's end.

A callback that raises is logged (``qqconn.webhook.callback_failed``) and the event counts as
delivered, as on the WebSocket path: the host had the event; its own bug is no reason to
replay it. Callbacks run one at a time, in arrival order, as the WebSocket manager's do.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from qqconn._log import get_logger
from qqconn.protocol import Dispatch
from qqconn.webhook.core import (
    ACK_BODY,
    DEFAULT_DEDUPE_MAX_IDS,
    DEFAULT_DEDUPE_WINDOW_S,
    DEFAULT_MAX_BODY_BYTES,
    Admission,
    DedupeStore,
    DedupeWindow,
    Event,
    HeartbeatProbe,
    RefusalKind,
    Refused,
    RequestVerifier,
    SignedHead,
    Validation,
    snapshot_counts,
)
from qqconn.webhook.store import FileDedupeStore

__all__ = ["DispatchCallback", "WebhookApp", "WebhookStats", "in_callback"]

#: True while ``on_dispatch`` runs (and in tasks it starts): ``WebhookReceiver.stop()`` then
#: does not wait for the server, which would be waiting for this very callback to return.
in_callback: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "qqconn_webhook_in_callback", default=False
)

DispatchCallback = Callable[[Dispatch], Awaitable[None] | None]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_JSON = [(b"content-type", b"application/json")]


@dataclass
class WebhookStats:
    """What the app has seen; :meth:`snapshot` is JSON-able and holds no secret."""

    delivered: int = 0
    duplicates: int = 0
    validations: int = 0
    heartbeats: int = 0
    callback_failures: int = 0
    events_without_id: int = 0
    internal_errors: int = 0
    last_event_at: float | None = None
    refused: Counter[RefusalKind] = field(default_factory=Counter)

    def snapshot(self) -> dict[str, Any]:
        return {
            "events_delivered": self.delivered,
            "events_duplicate": self.duplicates,
            "validations": self.validations,
            "heartbeats": self.heartbeats,
            "callback_failures": self.callback_failures,
            "events_without_id": self.events_without_id,
            "internal_errors": self.internal_errors,
            "last_event_at_unix": self.last_event_at,
            "refused": snapshot_counts(self.refused),
            "refused_total": sum(self.refused.values()),
        }


class WebhookApp:
    """The QQ webhook callback as an ASGI application (HTTP and lifespan scopes).

    ``on_dispatch`` is the WebSocket manager's callback, unchanged: a function or coroutine
    function taking a :class:`~qqconn.protocol.Dispatch`. ``path`` None accepts any path (a
    router in front chose it); a string refuses every other path with 404. ``dedupe_store`` is
    a :class:`~qqconn.webhook.core.DedupeStore` or a file path (a
    :class:`~qqconn.webhook.store.FileDedupeStore`), loaded here, so the dedupe window
    survives a restart. ``clock`` is a wall clock (seconds since the epoch).
    """

    def __init__(
        self,
        *,
        app_id: str,
        client_secret: str,
        on_dispatch: DispatchCallback | None = None,
        path: str | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        dedupe_window_s: float = DEFAULT_DEDUPE_WINDOW_S,
        dedupe_max_ids: int = DEFAULT_DEDUPE_MAX_IDS,
        dedupe_store: DedupeStore | str | os.PathLike[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.verifier = RequestVerifier(
            app_id=app_id, client_secret=client_secret, path=path, max_body_bytes=max_body_bytes
        )
        self.app_id = app_id
        self._on_dispatch = on_dispatch
        self._clock = clock
        if isinstance(dedupe_store, (str, os.PathLike)):
            dedupe_store = FileDedupeStore(dedupe_store)
        self.dedupe_store = dedupe_store
        self.window = DedupeWindow(
            window_s=dedupe_window_s, max_ids=dedupe_max_ids, store=dedupe_store, now=clock()
        )
        self.stats = WebhookStats()
        self._log = get_logger("qqconn.webhook").bind(app_id=app_id)
        self._in_flight: dict[str, asyncio.Future[bool]] = {}
        self._host_lane = asyncio.Lock()
        if self.window.loaded:
            self._log.info("qqconn.webhook.dedupe_loaded", ids=self.window.loaded)

    def __repr__(self) -> str:
        return f"<WebhookApp app_id={self.app_id!r} path={self.verifier.path!r}>"

    def set_on_dispatch(self, on_dispatch: DispatchCallback | None) -> None:
        """Replace the callback (for a host that builds it after the app)."""
        self._on_dispatch = on_dispatch

    # -- ASGI -----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started: list[bool] = []

        async def answer(status: int, body: bytes, extra: list[tuple[bytes, bytes]] = []) -> None:  # noqa: B006
            started.append(True)
            headers = [*_JSON, (b"content-length", str(len(body)).encode()), *extra]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        try:
            await self._handle(scope, receive, answer)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here costs one request, never the server
            self.stats.internal_errors += 1
            self._log.exception("qqconn.webhook.internal_error")
            if not started:
                try:
                    await answer(500, b'{"error":"internal"}')
                except Exception:
                    return

    async def _handle(
        self, scope: Scope, receive: Receive, answer: Callable[..., Awaitable[None]]
    ) -> None:
        path = _route_path(scope)
        head = self.verifier.check_head(scope.get("method", ""), path, scope.get("headers", []))
        if isinstance(head, Refused):
            await self._refuse(head, scope, answer)
            return
        body = await self._read_body(head, receive)
        if isinstance(body, Refused):
            if body.kind is RefusalKind.BODY_INCOMPLETE:
                self._note_refusal(body, scope)  # the sender is gone: nobody to answer
            else:
                await self._refuse(body, scope, answer)
            return
        verdict = self.verifier.check_body(head, body)
        if isinstance(verdict, Refused):
            await self._refuse(verdict, scope, answer)
        elif isinstance(verdict, Event):
            await self._on_event(verdict, answer)
        elif isinstance(verdict, Validation):
            self.stats.validations += 1
            self._log.info("qqconn.webhook.validated")
            await answer(200, verdict.answer(self.verifier.key))
        else:
            assert isinstance(verdict, HeartbeatProbe)
            self.stats.heartbeats += 1
            await answer(200, verdict.answer())

    async def _read_body(self, head: SignedHead, receive: Receive) -> bytes | Refused:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return Refused(RefusalKind.BODY_INCOMPLETE, f"sender went away after {size} bytes")
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                too_large = self.verifier.body_too_large(size)
                if too_large is not None:
                    return too_large
                chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _note_refusal(self, refused: Refused, scope: Scope) -> None:
        self.stats.refused[refused.kind] += 1
        client = scope.get("client")
        self._log.warning(
            "qqconn.webhook.refused",
            kind=refused.kind.value,
            status=refused.status,
            reason=refused.reason,
            client=f"{client[0]}:{client[1]}" if client else None,
        )

    async def _refuse(
        self, refused: Refused, scope: Scope, answer: Callable[..., Awaitable[None]]
    ) -> None:
        self._note_refusal(refused, scope)
        extra = [(b"allow", b"POST")] if refused.kind is RefusalKind.WRONG_METHOD else []
        await answer(refused.status, refused.body(), extra)

    # -- delivery -------------------------------------------------------------------------------

    async def _on_event(self, event: Event, answer: Callable[..., Awaitable[None]]) -> None:
        dispatch = event.dispatch
        self.stats.last_event_at = self._clock()
        event_id = dispatch.event_id
        if event_id is None:
            # Nothing to deduplicate on; delivering beats dropping (a retry may repeat it).
            self.stats.events_without_id += 1
            self._log.warning("qqconn.webhook.event_without_id", t=dispatch.type, seq=dispatch.seq)
            await self._deliver(dispatch)
            await answer(200, ACK_BODY)
            return
        admission = self.window.admit(event_id, self._clock())
        if admission is Admission.NEW:
            done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            self._in_flight[event_id] = done
            delivered = False
            try:
                await self._deliver(dispatch)
                delivered = True
            finally:
                if delivered:
                    self.window.finish(event_id, self._clock())
                else:  # cancelled (shutdown): unrecorded and unacknowledged, so retried later
                    self.window.abandon(event_id)
                del self._in_flight[event_id]
                done.set_result(delivered)
            await answer(200, ACK_BODY)
            return
        if admission is Admission.IN_FLIGHT:
            first = self._in_flight.get(event_id)
            if first is not None and not await asyncio.shield(first):
                await answer(503, b'{"error":"retry"}')
                return
        self.stats.duplicates += 1
        self._log.debug("qqconn.webhook.duplicate", event_id=event_id, t=dispatch.type)
        await answer(200, ACK_BODY)

    async def _deliver(self, dispatch: Dispatch) -> None:
        async with self._host_lane:
            token = in_callback.set(True)
            try:
                if self._on_dispatch is not None:
                    result = self._on_dispatch(dispatch)
                    if inspect.isawaitable(result):
                        await result
            except Exception:  # the host had the event; its bug is no reason to replay it
                self.stats.callback_failures += 1
                self._log.exception(
                    "qqconn.webhook.callback_failed",
                    callback="on_dispatch",
                    event_id=dispatch.event_id,
                    t=dispatch.type,
                )
            finally:
                in_callback.reset(token)
            self.stats.delivered += 1

    def snapshot(self) -> dict[str, Any]:
        """Counts, the last event's time, refusals by kind, the dedupe window's size."""
        snap = self.stats.snapshot()
        snap["dedupe_ids"] = len(self.window)
        snap["dedupe_window_s"] = self.window.window_s
        snap["dedupe_max_ids"] = self.window.max_ids
        snap["dedupe_store"] = (
            str(self.dedupe_store.path)
            if isinstance(self.dedupe_store, FileDedupeStore)
            else (type(self.dedupe_store).__name__ if self.dedupe_store is not None else None)
        )
        return snap


def _route_path(scope: Scope) -> str:
    """The path below the mount point (Starlette keeps the full path and sets root_path)."""
    path: str = scope.get("path", "") or "/"
    root: str = scope.get("root_path", "") or ""
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path
