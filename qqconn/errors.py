"""Errors, split by blame (the h11 school).

* :class:`ConfigError` / :class:`LocalProtocolError` — the caller did something wrong.
* :class:`RemoteProtocolError` — the server sent something qqconn cannot use.
* :class:`FatalError` — the manager gave up; carries what an operator needs.

Every error derives from :class:`QQConnError`. None of them ever carries a secret.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "CredentialsRefused",
    "FatalError",
    "LocalProtocolError",
    "QQConnError",
    "RemoteProtocolError",
]


class QQConnError(Exception):
    """Base class of every error qqconn raises."""


class ConfigError(QQConnError, ValueError):
    """A configuration value is invalid. ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class LocalProtocolError(QQConnError):
    """The caller fed the machine an event it cannot take in its current state.

    The machine's state is unchanged when this is raised.
    """

    def __init__(self, message: str, *, state: str, event: str) -> None:
        super().__init__(f"{message} (state={state}, event={event})")
        self.state = state
        self.event = event


class RemoteProtocolError(QQConnError):
    """The server sent a frame or an HTTP answer that qqconn cannot use."""


class CredentialsRefused(RemoteProtocolError):
    """The credentials were refused: the token endpoint refused the app id or the client
    secret, or ``/gateway/bot`` refused the access token (HTTP 401/403, QQ's token error)."""


class FatalError(QQConnError):
    """The manager reached FATAL: it gave up and will open no more connections.

    ``retryable`` tells a supervisor whether restarting later may help (a spent reconnect
    budget) or not (the bot is banned, the credentials are refused, the intents are invalid).
    """

    def __init__(self, reason: str, *, close_code: int | None, retryable: bool) -> None:
        super().__init__(
            f"{reason} (close_code={close_code}, retryable={'yes' if retryable else 'no'})"
        )
        self.reason = reason
        self.close_code = close_code
        self.retryable = retryable
