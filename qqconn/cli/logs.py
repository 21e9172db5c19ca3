"""Logging set-up for ``qqconn run``: the library never configures logging; the command does.

structlog to stderr, for people (``console``) or one JSON object per line (``json``), with the
stdlib's warnings routed through it and every secret scrubbed as a last line of defence.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from qqconn.cli.secrets import MIN_REDACT_LEN

__all__ = ["configure_logging"]


def configure_logging(
    fmt: str, level: str = "info", *, stream: TextIO | None = None, redact: Sequence[str] = ()
) -> None:
    """Configure structlog (and route the stdlib's warnings through it) for ``qqconn run``.

    ``console``: aligned, coloured when ``stream`` is a terminal. ``json``: one JSON object per
    line with ``timestamp``, ``level`` and ``event``. Every string in ``redact`` (of at least
    :data:`~qqconn.cli.secrets.MIN_REDACT_LEN` characters: a shorter one would mangle ordinary
    words) is replaced by ``***`` in every value, a last line of defence behind the library's
    own care.
    """
    import structlog

    out = sys.stderr if stream is None else stream
    levelno = logging.getLevelNamesMapping()[level.upper()]
    secrets = [s for s in redact if len(s) >= MIN_REDACT_LEN]

    def scrub(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
        if secrets:
            for key, value in event.items():
                if isinstance(value, str) and any(s in value for s in secrets):
                    for s in secrets:
                        value = value.replace(s, "***")
                    event[key] = value
        return event

    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if fmt == "json":
        processors += [
            structlog.processors.format_exc_info,
            scrub,
            structlog.processors.JSONRenderer(ensure_ascii=False, default=str),
        ]
    else:
        processors += [scrub, structlog.dev.ConsoleRenderer(colors=out.isatty())]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(levelno),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )

    class _ToStructlog(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            try:
                structlog.get_logger(record.name).log(
                    record.levelno, f"{record.name}.log", message=record.getMessage()[:500]
                )
            except Exception:
                self.handleError(record)

    root = logging.getLogger()
    root.handlers[:] = [_ToStructlog()]
    root.setLevel(max(levelno, logging.WARNING))  # httpx's per-request INFO lines stay out
