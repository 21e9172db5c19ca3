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
            self._log.error("qqconn.cli.stdout_closed", seq=d.seq)
            self._on_closed()


def output_checkpoint(
    path: Path, resume_window_s: float, log: Any
) -> tuple[str, int | None] | None:
    """The resume checkpoint an ``--output`` file holds: the session of its last READY line and
    the ``s`` of its last complete line. A torn last line (the process died mid-write) is cut
    off first: it was never completely written, so its event will be replayed.

    None when the file is missing, empty, older than ``resume_window_s``, or holds no READY.
    """
    try:
        data = path.read_bytes()
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        with path.open("r+b") as fh:
            fh.truncate(len(complete))
        log.warning("qqconn.cli.output_torn_line_removed", bytes=len(data) - len(complete))
    if age > resume_window_s:
        log.info("qqconn.cli.output_too_old_to_resume", age_s=round(age, 1))
        return None
    last_seq: int | None = None
    for raw in reversed(complete.splitlines()):
        try:
            doc = json.loads(raw)
        except ValueError:
            log.warning(
                "qqconn.cli.output_unreadable_line", line=raw[:80].decode("utf-8", "replace")
            )
            return None
        if last_seq is None:
            if not isinstance(doc, dict) or type(doc.get("s")) is not int:
                return None
            last_seq = doc["s"]
        if isinstance(doc, dict) and doc.get("t") == "READY":
            sid = doc.get("d", {}).get("session_id") if isinstance(doc.get("d"), dict) else None
            return (sid, last_seq) if isinstance(sid, str) and sid else None
    return None
