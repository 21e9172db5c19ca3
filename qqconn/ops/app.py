"""The ops endpoints as a plain ASGI application (no framework: five routes, GET and HEAD).

========================  ===============================================================
``/``                     the live status page (HTML, self-contained)
``/status.json``          every watched connection: state, counters, recent transitions
``/metrics``              Prometheus text format (404 when the server has no Metrics)
``/livez``                200 while the event loop runs the lag probe on time, else 503
``/readyz``               200 when every watched connection is ALIVE, else 503 naming them
``/statechart.svg``       the statechart the page inlines
========================  ===============================================================

Every answer is ``Cache-Control: no-store``; a handler that fails answers 500 and logs
``qqconn.ops.error``, it never takes the process down.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from qqconn._log import get_logger
from qqconn.metrics import CONTENT_TYPE, Metrics
from qqconn.ops.page import page_html, statechart_svg
from qqconn.ops.status import Board

__all__ = ["OpsApp"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON = "application/json"
_PAGE_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'"
)


class OpsApp:
    """The ASGI callable. ``liveness()`` returns ``(live, details)`` for ``/livez``."""

    def __init__(
        self,
        board: Board,
        *,
        metrics: Metrics | None,
        liveness: Callable[[], tuple[bool, dict[str, Any]]],
        title: str = "qqconn",
        refresh_s: float = 1.0,
    ) -> None:
        self.board = board
        self.metrics = metrics
        self.liveness = liveness
        self.title = title
        self.refresh_s = refresh_s
        self._log = get_logger("qqconn.ops")
        self._routes: dict[str, Callable[[], tuple[int, str, bytes]]] = {
            "/": self._page,
            "/index.html": self._page,
            "/status.json": self._status,
            "/metrics": self._metrics,
            "/livez": self._livez,
            "/readyz": self._readyz,
            "/statechart.svg": self._chart,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method = scope.get("method", "GET")
        route = self._routes.get(scope.get("path", ""))
        extra: list[tuple[bytes, bytes]] = []
        if route is None:
            status, ctype, body = 404, "text/plain; charset=utf-8", b"not found\n"
        elif method not in ("GET", "HEAD"):
            status, ctype, body = 405, "text/plain; charset=utf-8", b"only GET and HEAD\n"
            extra.append((b"allow", b"GET, HEAD"))
        else:
            try:
                status, ctype, body = route()
            except Exception as exc:  # a bug in a report must never take the process down
                self._log.exception("qqconn.ops.error", path=scope.get("path"))
                status, ctype = 500, "text/plain; charset=utf-8"
                body = f"internal error: {type(exc).__name__}\n".encode()
        if ctype.startswith("text/html"):
            extra.append((b"content-security-policy", _PAGE_POLICY.encode()))
        headers = [
            (b"content-type", ctype.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
            (b"x-content-type-options", b"nosniff"),
            *extra,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

    # -- routes --------------------------------------------------------------------------

    def _page(self) -> tuple[int, str, bytes]:
        body = page_html(title=self.title, refresh_s=self.refresh_s).encode("utf-8")
        return 200, "text/html; charset=utf-8", body

    def _chart(self) -> tuple[int, str, bytes]:
        return 200, "image/svg+xml", statechart_svg()[0].encode("utf-8")

    def _status(self) -> tuple[int, str, bytes]:
        live, details = self.liveness()
        doc = self.board.status(extra={"live": live, "loop": details})
        return 200, _JSON, _dump(doc)

    def _metrics(self) -> tuple[int, str, bytes]:
        if self.metrics is None:
            body = b"no metrics here: start the ops server with metrics=qqconn.metrics.Metrics()\n"
            return 404, "text/plain; charset=utf-8", body
        self.board.poll()
        return 200, CONTENT_TYPE, self.metrics.exposition()

    def _livez(self) -> tuple[int, str, bytes]:
        live, details = self.liveness()
        return (200 if live else 503), _JSON, _dump({"live": live, **details})

    def _readyz(self) -> tuple[int, str, bytes]:
        ready, not_ready = self.board.readiness()
        doc = {"ready": ready, "verdict": self.board.verdict(), "not_ready": not_ready}
        return (200 if ready else 503), _JSON, _dump(doc)


def _dump(doc: Any) -> bytes:
    return (json.dumps(doc, ensure_ascii=False, allow_nan=False, default=str) + "\n").encode()


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
