"""A file that keeps the webhook dedupe window across restarts.

One JSON line per delivered event id, ``{"id": ..., "at": ...}``, appended and flushed when the
host's callback has returned (``fsync=True`` also forces it to the disk before the
acknowledgement goes out). A torn last line (the process died mid-write) is ignored on load.
When the file has grown to twice what the window holds it is rewritten in one atomic step
(a temporary file in the same directory, then ``os.replace``), mode 0600, holding only the
ids still inside the window. The file never holds a secret, only event ids and times.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from qqconn._log import get_logger

__all__ = ["FileDedupeStore"]


class FileDedupeStore:
    """A :class:`~qqconn.webhook.core.DedupeStore` in one append-only JSON-lines file."""

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._fh: IO[str] | None = None
        self._log = get_logger("qqconn.webhook")
        self.failed_writes = 0

    def __repr__(self) -> str:
        return f"FileDedupeStore({str(self.path)!r})"

    def load(self) -> list[tuple[str, float]]:
        """Every complete, readable line, oldest first. A missing file is an empty window."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            self._log.warning(
                "qqconn.webhook.dedupe_store_unreadable", path=str(self.path), error=str(exc)[:200]
            )
            return []
        entries: list[tuple[str, float]] = []
        skipped = 0
        complete = data[: data.rfind(b"\n") + 1]
        for raw in complete.splitlines():
            try:
                doc = json.loads(raw)
                event_id, at = doc["id"], doc["at"]
            except (ValueError, TypeError, KeyError):
                skipped += 1
                continue
            if isinstance(event_id, str) and isinstance(at, (int, float)):
                entries.append((event_id, float(at)))
            else:
                skipped += 1
        torn = len(data) - len(complete)
        if skipped or torn:
            self._log.warning(
                "qqconn.webhook.dedupe_store_lines_skipped",
                path=str(self.path),
                unreadable_lines=skipped,
                torn_bytes=torn,
            )
        if torn:
            # Cut the torn line off, so the next append starts on a line of its own.
            self.compact(entries)
        return entries

    def add(self, event_id: str, delivered_at: float) -> None:
        """Append one line (flushed; fsynced when ``fsync``)."""
        line = json.dumps({"id": event_id, "at": delivered_at}, ensure_ascii=False) + "\n"
        try:
            fh = self._open()
            fh.write(line)
            fh.flush()
            if self.fsync:
                os.fsync(fh.fileno())
        except OSError as exc:
            self._write_failed(exc)

    def compact(self, entries: Iterable[tuple[str, float]]) -> None:
        """Replace the file with ``entries``, atomically."""
        self.close()
        try:
            fd, tmp = tempfile.mkstemp(
                prefix=".qqconn-dedupe-", suffix=".tmp", dir=self.path.parent
            )
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    for event_id, at in entries:
                        fh.write(json.dumps({"id": event_id, "at": at}, ensure_ascii=False))
                        fh.write("\n")
                    fh.flush()
                    if self.fsync:
                        os.fsync(fh.fileno())
                os.chmod(tmp, 0o600)
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            self._write_failed(exc)

    def close(self) -> None:
        """Close the file (the next ``add`` reopens it)."""
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None

    def _open(self) -> IO[str]:
        if self._fh is None:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._fh = os.fdopen(fd, "a", encoding="utf-8")
        return self._fh

    def _write_failed(self, exc: OSError) -> None:
        self.failed_writes += 1
        self.close()
        # Deliveries go on: a full disk costs the restart guarantee, not the events.
        self._log.warning(
            "qqconn.webhook.dedupe_store_failed", path=str(self.path), error=str(exc)[:200]
        )

    def __enter__(self) -> FileDedupeStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
