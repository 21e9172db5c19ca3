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

__all__ = ["EventSink", "output_checkpoint", "output_checkpoints"]


class EventSink:
    """Writes each dispatch as one JSON line (``{"s", "t", "id", "d"}``, and ``"shard"``
    first when the sink was given one or :meth:`write_shard` is used) and flushes it.

    When the reader of the stream goes away (a closed pipe), the sink stops writing, points the
    descriptor at /dev/null (so nothing later spins on EPIPE), logs once and calls
    ``on_closed``: the run stops cleanly instead of losing events silently.
    """

    def __init__(
        self,
        stream: TextIO,
        log: Any,
        *,
        on_closed: Callable[[], None],
        shard: int | None = None,
    ) -> None:
        self.stream = stream
        self.shard = shard
        self.closed = False
        self._log = log
        self._on_closed = on_closed

    def write(self, d: Dispatch) -> None:
        self.write_shard(self.shard, d)

    def write_shard(self, shard: int | None, d: Dispatch) -> None:
        """One line for shard ``shard``'s dispatch (None: a line without ``"shard"``)."""
        if self.closed:
            return
        doc: dict[str, Any] = {} if shard is None else {"shard": shard}
        doc.update(s=d.seq, t=d.type, id=d.event_id, d=d.data)
        line = json.dumps(
            doc,
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
    path: Path, resume_window_s: float, log: Any, *, shard: int | None = None
) -> tuple[str, int | None] | None:
    """The resume checkpoint an ``--output`` file holds, as ``(session_id, last_seq)``.

    ``shard``: only the lines of that shard count (lines whose ``"shard"`` is that id, and
    lines without one, as written before lines carried it): several shards share one file.

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
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) < len(data):
        with path.open("r+b") as fh:
            fh.truncate(len(complete))
        log.warning("qqconn.cli.output_torn_line_removed", bytes=len(data) - len(complete))
    if shard is not None:
        complete = b"".join(line for line in complete.splitlines(True) if _of_shard(line, shard))
    verdict = judge_output(complete, age_s=age, resume_window_s=resume_window_s)
    if verdict.resumable is None:
        log.info("qqconn.cli.output_not_resumable", reason=verdict.why_not, path=str(path))
        return None
    return verdict.resumable.session_id, verdict.resumable.last_seq


def output_checkpoints(
    path: Path, resume_window_s: float, log: Any
) -> dict[int, tuple[str, int | None]]:
    """:func:`output_checkpoint` of every shard with a line in the file (``--shards``)."""
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return {}
    ids: set[int] = set()
    for line in lines:
        with contextlib.suppress(ValueError):
            doc = json.loads(line)
            if isinstance(doc, dict) and type(doc.get("shard")) is int:
                ids.add(doc["shard"])
    found = {}
    for shard in sorted(ids):
        checkpoint = output_checkpoint(path, resume_window_s, log, shard=shard)
        if checkpoint is not None:
            found[shard] = checkpoint
    return found


def _of_shard(line: bytes, shard: int) -> bool:
    try:
        doc = json.loads(line)
    except ValueError:
        return True  # judge_output names the unreadable line
    return not isinstance(doc, dict) or doc.get("shard", shard) == shard
