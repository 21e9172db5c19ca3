"""The state file: an atomic, mode-0600 JSON picture of the connection, and reading it back.

What the picture holds is :func:`qqconn.checkpoint.state_document` (never a secret), and
whether a restart may resume from it is :func:`qqconn.checkpoint.judge_resume`; when it is
rewritten is the machine's call. This module only writes it so that a reader in another process
never sees half a file (temporary file, ``chmod``, ``os.replace``), and reads it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

from qqconn import checkpoint
from qqconn._log import QuietLogger
from qqconn.checkpoint import Resumable
from qqconn.machine import DETAIL_CHARS

__all__ = ["CheckpointStore", "StateFile", "flush_store", "load_stored"]


class StateFile:
    """One state file: ``write(snapshot)`` replaces it atomically; ``load()`` reads it back."""

    def __init__(self, path: Path, *, log: QuietLogger) -> None:
        self.path = path
        self._log = log

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
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            self._log.warning(
                "qqconn.state_file_failed", path=str(self.path), error=str(exc)[:DETAIL_CHARS]
            )

    def load(
        self, *, app_id: str, shard: tuple[int, int], resume_window_s: float
    ) -> Resumable | None:
        """The session an earlier process saved, if :func:`~qqconn.checkpoint.judge_resume`
        says it may be resumed (logged as ``qqconn.session_restored``); else None (logged as
        ``qqconn.state_file_ignored``, with the reason)."""
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            self._log.warning(
                "qqconn.state_file_ignored", reason=f"unreadable: {type(exc).__name__}"
            )
            return None
        now = time.time()
        verdict = checkpoint.judge_resume(
            doc, app_id=app_id, shard=shard, now_unix=now, resume_window_s=resume_window_s
        )
        if isinstance(verdict, str):
            self._log.info("qqconn.state_file_ignored", reason=verdict, path=str(self.path))
            return None
        age = checkpoint.document_age_s(doc, now) if isinstance(doc, dict) else None
        self._log.info(
            "qqconn.session_restored", last_seq=verdict.last_seq, age_s=round(age or 0.0, 1)
        )
        return verdict


class CheckpointStore(Protocol):
    """Somewhere besides the state file to keep the resume checkpoint, so that a shard started
    on another machine, with no file of its own, Resumes (``qqconn.redis.RedisCheckpoints``).

    ``save`` never waits and never raises (the store writes in the background and logs what
    fails: a store that went away never ends a connection); ``load`` answers the document
    last saved for ``(app_id, shard)``, or None; it may raise when the store is unreachable
    (the manager then logs it and Identifies).
    """

    async def load(self, app_id: str, shard: tuple[int, int]) -> object:
        """The last document saved for this app and shard (a state-file document), or None."""
        ...

    def save(self, snapshot: dict[str, Any]) -> None:
        """Keep ``snapshot`` (a :meth:`ConnectionManager.snapshot`), in the background."""
        ...

    async def flush(self, timeout_s: float) -> None:
        """Wait, at most ``timeout_s``, until what was saved so far is written."""
        ...


def judge_stored(
    doc: object, *, app_id: str, shard: tuple[int, int], resume_window_s: float, log: QuietLogger
) -> Resumable | None:
    """A document a :class:`CheckpointStore` answered, judged as a state file is."""
    if doc is None:
        log.info("qqconn.checkpoint_store_empty")
        return None
    now = time.time()
    verdict = checkpoint.judge_resume(
        doc, app_id=app_id, shard=shard, now_unix=now, resume_window_s=resume_window_s
    )
    if isinstance(verdict, str):
        log.info("qqconn.checkpoint_store_ignored", reason=verdict)
        return None
    age = checkpoint.document_age_s(doc, now) if isinstance(doc, dict) else None
    log.info(
        "qqconn.session_restored",
        last_seq=verdict.last_seq,
        age_s=round(age or 0.0, 1),
        source="store",
    )
    return verdict


async def flush_store(store: CheckpointStore, timeout_s: float, log: Any) -> None:
    """Flush ``store`` within ``timeout_s`` at the end of a run. A store that fails (its own
    bug or absence) is logged, never raised: the run still ends."""
    try:
        await store.flush(timeout_s)
    except Exception as exc:
        log.warning(
            "qqconn.checkpoint_store_unavailable", error=f"{type(exc).__name__}: {exc}"[:200]
        )


async def load_stored(
    store: CheckpointStore, app_id: str, shard: tuple[int, int], timeout_s: float, log: Any
) -> tuple[bool, Any]:
    """``(True, document)`` from ``store`` within ``timeout_s``, or ``(False, None)`` when it
    cannot answer: logged, never fatal (the run then Identifies)."""
    try:
        async with asyncio.timeout(timeout_s):
            return True, await store.load(app_id, shard)
    except Exception as exc:
        log.warning(
            "qqconn.checkpoint_store_unavailable",
            error=f"{type(exc).__name__}: {exc}"[:200],
            then="identify",
        )
        return False, None
