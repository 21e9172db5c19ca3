"""A manager's configuration: the checks of its arguments, and which session it resumes.

:func:`check_config` raises :class:`~qqconn.errors.ConfigError` for the first argument a
:class:`~qqconn.driver.manager.ConnectionManager` cannot work with; :func:`resume_point` picks
the session a new manager resumes (the host's ``resume_from``, else the state file's).
"""

from __future__ import annotations

from typing import Any

from qqconn.checkpoint import Resumable
from qqconn.driver.statefile import StateFile
from qqconn.errors import ConfigError

__all__ = ["check_config", "check_resume_from", "resume_point"]


def check_config(
    app_id: object,
    client_secret: object,
    intents: object,
    shard: object,
    api_base: object,
    token_url: object,
) -> None:
    """Raise :class:`ConfigError` for the first argument a manager cannot work with."""
    if not isinstance(app_id, str) or not app_id.strip():
        raise ConfigError("app_id", "must be a non-empty string")
    if not isinstance(client_secret, str) or not client_secret:
        raise ConfigError("client_secret", "must be a non-empty string")
    if isinstance(intents, bool) or not isinstance(intents, int) or not 0 < intents < 1 << 31:
        raise ConfigError("intents", f"must be a positive intent mask, got {intents!r}")
    if (
        not isinstance(shard, tuple)
        or len(shard) != 2
        or not all(isinstance(x, int) and not isinstance(x, bool) for x in shard)
        or not 0 <= shard[0] < shard[1]
    ):
        raise ConfigError(
            "shard", f"must be (shard_id, shard_count) with 0 ≤ id < count, got {shard!r}"
        )
    for name, url in (("api_base", api_base), ("token_url", token_url)):
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(name, f"must be an http(s) URL, got {url!r}")


def check_resume_from(resume_from: object) -> Resumable:
    """``resume_from=(session_id, seq)`` as a :class:`~qqconn.checkpoint.Resumable`."""
    sid, seq = (
        resume_from if isinstance(resume_from, tuple) and len(resume_from) == 2 else ("", None)
    )
    if not isinstance(sid, str) or not sid or not (seq is None or (type(seq) is int and seq >= 0)):
        raise ConfigError("resume_from", f"must be (session_id, seq), got {resume_from!r}")
    return Resumable(sid, seq)


def resume_point(
    file: StateFile | None,
    resume_from: object,
    *,
    app_id: str,
    shard: tuple[int, int],
    resume_window_s: float,
    log: Any,
) -> Resumable | None:
    """The session to resume: the host's own checkpoint if it gave one, else the state
    file's if :func:`~qqconn.checkpoint.judge_resume` allows it (reasons are logged)."""
    saved = None
    if file is not None:
        saved = file.load(app_id=app_id, shard=shard, resume_window_s=resume_window_s)
    if resume_from is None:
        return saved
    # A checkpoint the host keeps itself (atomically with its own output) wins over the
    # state file's: with it, a restart neither skips nor repeats an event.
    restored = check_resume_from(resume_from)
    if saved is not None and saved.session_id == restored.session_id:
        restored = Resumable(restored.session_id, restored.last_seq, saved.ready)
    log.info("qqconn.session_restored", last_seq=restored.last_seq, source="host")
    return restored
