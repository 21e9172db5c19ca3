"""Library logging: join the host's logging, never write to stdout, never break the connection.

:func:`get_logger` is where qqconn's loggers are made. Which backend a line goes to is decided
at log time, not at import (a host may configure logging after importing qqconn):

* the host configured structlog (``structlog.is_configured()``): structlog's configuration
  rules, exactly as before;
* it did not: the line goes to the standard :mod:`logging` module, to the logger of the same
  name in the ``qqconn`` hierarchy (``qqconn``, ``qqconn.webhook``, ``qqconn.ops``...), at the
  same level. The record's message is the event name followed by its keys rendered as
  ``key=value`` (``qqconn.transition source=ALIVE dest=BACKOFF ...``); the record also carries
  ``record.event`` (the event name) and ``record.qqconn`` (a dict of the keys, bound ones
  included) for handlers and filters that want them structured. ``log.exception(...)`` passes
  the exception (``exc_info``) along. The ``qqconn`` logger has a :class:`logging.NullHandler`,
  as a library's should: with no handler configured at all, nothing is printed anywhere.

Either way the library writes nothing to stdout. :class:`QuietLogger` wraps every logger: if the
host's logging setup raises (a processor's bug, a closed pipe, a full disk), that failure never
travels into the machine's transition or the driver's reader; the log line is lost instead,
which is the lesser harm.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import structlog

__all__ = ["QuietLogger", "get_logger"]

logging.getLogger("qqconn").addHandler(logging.NullHandler())

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "msg": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}


class _LibraryLogger:
    """A logger named ``name`` whose backend (structlog or the stdlib) is chosen per call."""

    __slots__ = ("_context", "_name", "_stdlib")

    def __init__(self, name: str, context: dict[str, Any] | None = None) -> None:
        self._name = name
        self._context = context or {}
        self._stdlib = logging.getLogger(name)

    def bind(self, **values: Any) -> _LibraryLogger:
        return _LibraryLogger(self._name, {**self._context, **values})

    def __getattr__(self, method: str) -> Callable[..., None]:
        if method.startswith("_"):
            raise AttributeError(method)
        return lambda *args, **kwargs: self._emit(method, *args, **kwargs)

    def _emit(self, method: str, event: str | None = None, *args: Any, **kwargs: Any) -> None:
        if structlog.is_configured():
            logger = structlog.get_logger(self._name)
            if self._context:
                logger = logger.bind(**self._context)
            getattr(logger, method)(event, *args, **kwargs)
            return
        level = _LEVELS.get(method)
        if level is None:
            raise AttributeError(method)
        stdlib = self._stdlib
        if not stdlib.isEnabledFor(level):
            return
        exc_info = kwargs.pop("exc_info", method == "exception")
        fields = {**self._context, **kwargs}
        message = " ".join(
            [
                str(event),
                *(
                    f"{k}={v!r}" if isinstance(v, str) and " " in v else f"{k}={v}"
                    for k, v in fields.items()
                ),
            ]
        )
        stdlib.log(
            level,
            "%s",
            message,
            exc_info=exc_info,
            extra={"event": event, "qqconn": fields},
            stacklevel=4,
        )


def get_logger(name: str = "qqconn") -> QuietLogger:
    """The library's logger ``name`` (in the ``qqconn`` hierarchy): structlog if the host
    configured it, else the stdlib's :mod:`logging`; either way it never raises."""
    return QuietLogger(_LibraryLogger(name))


class QuietLogger:
    """Forwards every call to a logger; exceptions from logging are swallowed."""

    __slots__ = ("_log",)

    def __init__(self, log: Any) -> None:
        self._log = log.unwrapped if isinstance(log, QuietLogger) else log

    @property
    def unwrapped(self) -> Any:
        """The logger behind this wrapper."""
        return self._log

    def bind(self, **values: Any) -> QuietLogger:
        try:
            return QuietLogger(self._log.bind(**values))
        except Exception:  # a host logger that cannot bind still must not break us
            return self

    def __getattr__(self, name: str) -> Callable[..., None]:
        try:
            method = getattr(self._log, name)
        except Exception:
            return _ignore

        def call(*args: Any, **kwargs: Any) -> None:
            try:
                method(*args, **kwargs)
            except Exception:  # the logging setup failed; the connection must not
                return

        return call


def _ignore(*_args: Any, **_kwargs: Any) -> None:
    return None
