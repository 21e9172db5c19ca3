"""The state file: an atomic, mode-0600 JSON picture of the connection, and reading it back.

What the picture holds is the manager's :meth:`~qqconn.ConnectionManager.snapshot` (never a
secret); when it is rewritten is the manager's business. This module only writes it so that a
reader in another process never sees half a file (temporary file, ``chmod``, ``os.replace``),
and reads it back for a restart.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qqconn._log import QuietLogger
from qqconn.machine import State
from qqconn.policy import Policy

__all__ = ["StateFile"]


class StateFile:
    """One state file: ``write(snapshot)`` replaces it atomically; ``load()`` reads it back."""

    def __init__(self, path: Path, *, clock: Callable[[], float], log: QuietLogger) -> None:
        self.path = path
        self._clock = clock
        self._log = log
        self._last_write = float("-inf")

    def due(self, interval_s: float) -> bool:
        """At least ``interval_s`` since the last successful write."""
        return self._clock() - self._last_write >= interval_s

    def write(self, snapshot: dict[str, Any]) -> None:
        """Replace the file with ``snapshot`` (atomically, mode 0600). A failure is logged."""
        try:
            fd, tmp = tempfile.mkstemp(prefix=".qqconn-", suffix=".tmp", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(snapshot, fh, sort_keys=True)
                    fh.write("\n")
                os.chmod(tmp, 0o600)
                os.replace(tmp, self.path)
                self._last_write = self._clock()
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            self._log.warning("qqconn.state_file_failed", path=str(self.path), error=str(exc)[:200])

    def load(
        self, *, app_id: str, shard: tuple[int, int], policy: Policy
    ) -> tuple[str, int | None] | None:
        """The session an earlier process saved, if the file is recent and ours; else None (the
        reason is logged)."""
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            self._log.warning(
                "qqconn.state_file_ignored", reason=f"unreadable: {type(exc).__name__}"
            )
            return None
        reason = None
        age = time.time() - doc.get("updated_at_unix", 0) if isinstance(doc, dict) else None
        if not isinstance(doc, dict):
            reason = "not a JSON object"
        elif doc.get("app_id") != app_id or doc.get("shard") != list(shard):
            reason = "written for another app id or shard"
        elif not isinstance(doc.get("session_id"), str) or not doc["session_id"]:
            reason = "no session to resume"
        elif not isinstance(age, float) or not 0 <= age <= policy.resume_window_s:
            reason = f"older than resume_window_s ({policy.resume_window_s:g} s)"
        elif doc.get("state") == State.FATAL.value:
            reason = "the earlier process ended in FATAL"
        seq = doc.get("last_seq") if isinstance(doc, dict) else None
        if (
            reason is None
            and seq is not None
            and (not isinstance(seq, int) or isinstance(seq, bool) or seq < 0)
        ):
            reason = "last_seq is not a sequence number"
        if reason is not None:
            self._log.info("qqconn.state_file_ignored", reason=reason, path=str(self.path))
            return None
        self._log.info("qqconn.session_restored", last_seq=seq, age_s=round(age or 0.0, 1))
        return doc["session_id"], seq
