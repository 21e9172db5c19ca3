"""A logger wrapper: the host's logging setup can never break the connection.

The library logs through structlog (configured by the host). If a processor or a sink raises
(a closed pipe, a full disk), that failure must not travel into the machine's transition or the
driver's reader; the log line is lost instead, which is the lesser harm.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["QuietLogger"]


class QuietLogger:
    """Forwards every call to a structlog logger; exceptions from logging are swallowed."""

    __slots__ = ("_log",)

    def __init__(self, log: Any) -> None:
        self._log = log.unwrapped if isinstance(log, QuietLogger) else log

    @property
    def unwrapped(self) -> Any:
        """The structlog logger behind this wrapper."""
        return self._log

    def bind(self, **values: Any) -> QuietLogger:
        return QuietLogger(self._log.bind(**values))

    def __getattr__(self, name: str) -> Callable[..., None]:
        method = getattr(self._log, name)

        def call(*args: Any, **kwargs: Any) -> None:
            try:
                method(*args, **kwargs)
            except Exception:  # the logging setup failed; the connection must not
                return

        return call
