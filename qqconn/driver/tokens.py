"""Credentials and transport security: the client secret, access tokens, the TLS context.

Nothing here decides when to connect; :class:`TokenSource` only answers "a token, please" with a
cached one or a fresh one, one request in flight at a time.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

import httpx

from qqconn import protocol as proto

__all__ = ["DEFAULT_TOKEN_URL", "Secret", "TokenSource", "tls_context"]

DEFAULT_TOKEN_URL = "https://bots.qq.com/app/getAppAccessToken"

_tls: ssl.SSLContext | None = None


def tls_context() -> ssl.SSLContext:
    """The process's one verifying TLS context, shared by every manager.

    Building a context loads the CA bundle (about 0.8 MiB and 30 ms each); a thousand managers
    each building their own is what made a connection cost a megabyte. Certificate checks are
    always on: there is deliberately no way to pass an unverified context.
    """
    global _tls
    if _tls is None:
        _tls = httpx.create_ssl_context()
    return _tls


class Secret:
    """A string that never shows itself in a repr, a str() or a log line."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself: only for the request that needs it."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


class TokenSource:
    """Access tokens from ``getAppAccessToken``: cached, one request in flight at a time.

    A cached token is used while it has more than ``margin_s`` left
    (``Policy.token_refresh_margin_s``: inside the last minute of a token's life, when the
    endpoint hands out a new one, docs/protocol.md §3.1).
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        url: str,
        app_id: str,
        secret: Secret,
        clock: Callable[[], float],
        margin_s: float,
    ) -> None:
        self._http = http
        self._margin_s = margin_s
        self._url = url
        self._app_id = app_id
        self._secret = secret
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token: Secret | None = None
        self._expires_at = 0.0

    @property
    def url(self) -> str:
        """The token endpoint's URL (no secret in it: the secret goes in the body)."""
        return self._url

    @property
    def current(self) -> Secret | None:
        """The cached token, if any."""
        return self._token

    async def get(self, *, refresh: bool = False) -> Secret:
        """The cached token while it has more than the margin left; else a new one."""
        async with self._lock:
            fresh_enough = self._clock() < self._expires_at - self._margin_s
            if self._token is not None and fresh_enough and not refresh:
                return self._token
            body = {"appId": self._app_id, "clientSecret": self._secret.reveal()}
            response = await self._http.post(self._url, json=body)
            token, expires_in = proto.parse_token_response(response.status_code, response.content)
            self._token = Secret(token)
            self._expires_at = self._clock() + expires_in
            return self._token

    def scrub(self, text: str) -> str:
        """``text`` with the client secret and the current token replaced by ``***`` (for a
        message that may echo a request)."""
        for secret in (self._secret, self._token):
            if secret is not None:
                text = text.replace(secret.reveal(), "***")
        return text
