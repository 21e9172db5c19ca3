"""The fake gateway's addresses and settings: its URLs, and the knobs of its books.

:class:`GatewaySettings` is a base of :class:`~qqconn.testing.FakeGateway`; every property
here is read (and some set) on the gateway itself. Nothing here does network I/O.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from qqconn.policy import Policy
from qqconn.testing.defaults import fast_policy
from qqconn.testing.rest import TOKEN_PATH
from qqconn.testing.sessions import SessionBook, TokenBook
from qqconn.testing.sockets import Socket
from qqconn.testing.ws import WS_PATH

if TYPE_CHECKING:
    from qqconn.testing.ws import WebSocketSide

__all__ = ["GatewaySettings"]


class GatewaySettings:
    """The URLs and the settings of a :class:`~qqconn.testing.FakeGateway` (set by its
    constructor)."""

    _host: str
    _client_secret: str
    _http_port: int
    _ws: WebSocketSide
    _token_book: TokenBook
    _book: SessionBook[Socket]
    advertised_ws_url: str | None

    @property
    def _url_host(self) -> str:
        return f"[{self._host}]" if ":" in self._host else self._host

    @property
    def api_base(self) -> str:
        """``http://127.0.0.1:<port>``: serves ``/gateway[/bot]`` and the message APIs."""
        return f"http://{self._url_host}:{self._http_port}"

    @property
    def token_url(self) -> str:
        """Where to POST ``{"appId", "clientSecret"}`` for an access token."""
        return f"{self.api_base}{TOKEN_PATH}"

    @property
    def ws_url(self) -> str:
        """The WebSocket URL ``/gateway`` hands out (:attr:`advertised_ws_url` if set)."""
        if self.advertised_ws_url is not None:
            return self.advertised_ws_url
        return self.direct_ws_url

    @property
    def direct_ws_url(self) -> str:
        """The fake's own WebSocket URL, whatever ``/gateway`` hands out."""
        return f"ws://{self._url_host}:{self._ws.port}{WS_PATH}"

    @property
    def ws_port(self) -> int:
        """The port of the fake's WebSocket server (a fault proxy relays to it)."""
        return self._ws.port

    @property
    def client_secret(self) -> str:
        """The client secret the token endpoint accepts (the fake's own, not a real one)."""
        return self._client_secret

    @property
    def fast_policy(self) -> Policy:
        """:func:`qqconn.testing.fast_policy`: test-suite timings for the manager under test."""
        return fast_policy()

    @property
    def token_ttl_s(self) -> float:
        return self._token_book.ttl_s

    @token_ttl_s.setter
    def token_ttl_s(self, value: float) -> None:
        self._token_book.ttl_s = value

    @property
    def token_refresh_window_s(self) -> float:
        return self._token_book.refresh_window_s

    @token_refresh_window_s.setter
    def token_refresh_window_s(self, value: float) -> None:
        self._token_book.refresh_window_s = value

    @property
    def session_start_total(self) -> int:
        return self._book.session_start_total

    @session_start_total.setter
    def session_start_total(self, value: int) -> None:
        self._book.session_start_total = value

    @property
    def session_start_remaining(self) -> int:
        """Decremented by every successful Identify; reported by ``/gateway/bot``."""
        return self._book.session_start_remaining

    @session_start_remaining.setter
    def session_start_remaining(self, value: int) -> None:
        self._book.session_start_remaining = value

    @property
    def identify_window_s(self) -> float:
        """The window ``max_concurrency`` counts session starts in (5 s; tests scale it)."""
        return self._book.identify_window_s

    @identify_window_s.setter
    def identify_window_s(self, value: float) -> None:
        self._book.identify_window_s = value

    @property
    def session_start_reset_after_ms(self) -> int:
        """``reset_after`` as reported; ``remaining`` returns to ``total`` that long after
        it is set."""
        return self._book.reset_after_ms

    @session_start_reset_after_ms.setter
    def session_start_reset_after_ms(self, value: int) -> None:
        self._book.reset_after_ms = value
        self._book.reset_at = time.monotonic() + value / 1000.0

    @property
    def identify_log(self) -> list[tuple[float, int]]:
        """Every Identify accepted: (monotonic time, shard id), in order."""
        return self._book.identify_log

    @property
    def refused_starts(self) -> list[tuple[float, int, str]]:
        """Every Identify refused for breaking ``session_start_limit``: (time, shard, why)."""
        return self._book.refused_log

    @property
    def max_concurrency(self) -> int:
        return self._book.max_concurrency

    @max_concurrency.setter
    def max_concurrency(self, value: int) -> None:
        self._book.max_concurrency = value
