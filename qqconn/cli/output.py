"""Where ``qqconn run`` puts events: one JSON line each, on stdout or appended to ``--output``.

An ``--output`` file is also the resume checkpoint of a restart (exactly once across a crash):
:func:`output_checkpoint` reads it back. Which session and seq it names, how old is too old and
how much of a torn last line to cut are judged by :func:`qqconn.checkpoint.judge_output`; this
module only does the file I/O and the logging around that verdict.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from qqconn.checkpoint import judge_output

if TYPE_CHECKING:
    from qqconn.protocol import Dispatch

__all__ = ["EventSink", "output_checkpoint"]


class EventSink:
    """Writes each dispatch as one JSON line (``{"s", "t", "id", "d"}``) and flushes it.

    When the reader of the stream goes away (a closed pipe), the sink stops writing, points the
    descriptor at /dev/null (so nothing later spins on EPIPE), logs once and calls
    ``on_closed``: the run stops cleanly instead of losing events silently.
    """

    def __init__(self, stream: TextIO, log: Any, *, on_closed: Callable[[], None]) -> None:
        self.stream = stream
        self.closed = False
        self._log = log
        self._on_closed = on_closed

    def write(self, d: Dispatch) -> None:
        if self.closed:
            return
        line = json.dumps(
            {"s": d.seq, "t": d.type, "id": d.event_id, "d": d.data},
            ensure_ascii=False,
            separators=(",", ":"),
            default=str,
        )
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (BrokenPipeError, ValueError):  # the reader of stdout is gone: stop, do not spin
            self.closed = True
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())
            self._log.error("qqconn.cli.stdout_closed", seq=d.seq, event_id=d.event_id)
            self._on_closed()


def output_checkpoint(
    path: Path, resume_window_s: float, log: Any
) -> tuple[str, int | None] | None:
    """The resume checkpoint an ``--output`` file holds, as ``(session_id, last_seq)``.

    The verdict is :func:`qqconn.checkpoint.judge_output`'s (the session of the last READY
    line, the ``s`` of the last complete line). A torn last line (the process died mid-write)
    is cut off the file here: it was never completely written, so its event will be replayed.

    None when the file is missing, or not resumable (empty, older than ``resume_window_s``,
    no READY line, an unreadable line); the reason is logged.
    """
    try:
        data = path.read_bytes()
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None
    verdict = judge_output(data, age_s=age, resume_window_s=resume_window_s)
    if verdict.torn_bytes:
        with path.open("r+b") as fh:
            fh.truncate(len(data) - verdict.torn_bytes)
        log.warning("qqconn.cli.output_torn_line_removed", bytes=verdict.torn_bytes)
    if verdict.resumable is None:
        log.info("qqconn.cli.output_not_resumable", reason=verdict.why_not, path=str(path))
        return None
    return verdict.resumable.session_id, verdict.resumable.last_seq
