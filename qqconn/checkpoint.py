"""Checkpoints, judged without I/O: the state file's schema, whether a restarted process may
resume, what an ``--output`` file says, and whether a status probe sees a healthy connection.

The driver writes the state file and the CLI reads files; everything they conclude from the
bytes lives here, so there is one schema, one resume judgement and one age rule
(:func:`age_within`). Nothing here opens a file, reads a clock or draws a random number: the
caller passes the text and the time in.

The state file
==============

One JSON object, rewritten atomically by the driver (docs/behaviour.md rule 13). Its keys
(:data:`SCHEMA_KEYS`):

``state``
    the machine's state (``"alive"`` only after READY/RESUMED, docs/behaviour.md rule 13).
``session_id``, ``last_seq``
    the resume checkpoint: the session, and the last ``s`` the host's callback *finished*
    with (never merely received). Both None when no session is held.
``received_seq``
    the last ``s`` read from the socket.
``reconnect_attempts``, ``quick_disconnects``, ``resume_failures``
    the machine's counters (failed attempts in a row, quick drops in a row, failed resumes).
``identify_refusals``
    Identifies answered with op 9 in a row (docs/behaviour.md rule 18).
``identify_wait``
    None, or ``{"wait_s", "reason"}`` while ``state`` is ``awaiting_permit`` and the identify
    limiter deferred the permit (rule 17; ``remaining`` 0 waits ``reset_after``).
``attempt``
    the current attempt number.
``heartbeat_interval_s``, ``last_ack_latency_s``
    the current socket's heartbeat interval, and the last ACK's latency.
``skipped``
    what rule 19 (a poison frame) gave up: ``{"seqs": [...], "sessions": n}``, the last
    ``s`` values skipped (never delivered) and how many sessions were given up.
``fatal``
    None, or ``{"reason", "close_code", "retryable"}`` once the machine gave up.
``last_ending``
    None, or ``{"kind", "reason", "close_code"}`` of the last connection end.
``ready``
    None, or the ``d`` of the last READY the host was handed (the bot's own ``user``, the
    session's ``shard``...): kept so a process that Resumes after a restart still knows it
    (``ConnectionManager.ready``). READY carries no secret.
``app_id``, ``shard``
    whose connection this is (``shard`` as a ``[id, count]`` list).
``updated_at``, ``updated_at_unix``
    when the file was written: ISO 8601 UTC with milliseconds, and Unix seconds.

It never holds a secret (docs/behaviour.md rule 16).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "SCHEMA_KEYS",
    "Health",
    "OutputVerdict",
    "Resumable",
    "age_within",
    "document_age_s",
    "judge_health",
    "judge_output",
    "judge_resume",
    "state_document",
]

#: The keys of a state file (see the module docstring).
SCHEMA_KEYS: frozenset[str] = frozenset(
    {
        "state",
        "session_id",
        "last_seq",
        "received_seq",
        "reconnect_attempts",
        "quick_disconnects",
        "resume_failures",
        "identify_refusals",
        "identify_wait",
        "attempt",
        "heartbeat_interval_s",
        "last_ack_latency_s",
        "skipped",
        "fatal",
        "last_ending",
        "ready",
        "app_id",
        "shard",
        "updated_at",
        "updated_at_unix",
    }
)

#: The state an earlier process ended in when it gave up (its session is not resumed).
_FATAL_STATE = "fatal"
#: An unreadable ``--output`` line is quoted in the verdict shortened to this many bytes.
QUOTE_BYTES = 80


@dataclass(frozen=True, slots=True)
class Resumable:
    """What a restarted process may resume: the session, and the last ``s`` it finished with;
    ``ready``: the READY ``d`` the earlier process saved, if it was a JSON object."""

    session_id: str
    last_seq: int | None
    ready: dict[str, Any] | None = None


def _is_seq(value: object) -> bool:
    return type(value) is int and value >= 0


def state_document(
    fields: Mapping[str, Any],
    *,
    app_id: str,
    shard: tuple[int, int],
    now_unix: float,
    ready: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON-able state-file document: the machine's snapshot ``fields`` plus ``ready`` (the
    READY ``d``, or None), ``app_id``, ``shard`` (a list), ``updated_at`` (ISO 8601,
    milliseconds, UTC) and ``updated_at_unix``.

    ``fields`` is :meth:`~qqconn.machine.ConnectionMachine.snapshot_fields`; it holds no secret,
    and neither does anything added here.
    """
    doc = dict(fields)
    doc["ready"] = dict(ready) if ready is not None else None
    doc["app_id"] = app_id
    doc["shard"] = list(shard)
    doc["updated_at"] = datetime.fromtimestamp(now_unix, UTC).isoformat(timespec="milliseconds")
    doc["updated_at_unix"] = now_unix
    return doc


# -- the age rule ------------------------------------------------------------------------------


def document_age_s(doc: Mapping[str, Any], now_unix: float) -> float | None:
    """How old a state-file document is, in seconds: from ``updated_at_unix`` if it is a
    number, else from the ISO ``updated_at`` (no zone means UTC). None when neither is usable."""
    stamp = doc.get("updated_at_unix")
    if isinstance(stamp, (int, float)) and not isinstance(stamp, bool) and math.isfinite(stamp):
        return now_unix - stamp
    updated = doc.get("updated_at")
    if isinstance(updated, str):
        try:
            parsed = datetime.fromisoformat(updated)
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return now_unix - parsed.timestamp()
    return None


def age_within(age_s: float | None, limit_s: float) -> bool:
    """The one age rule: a checkpoint is recent when its age is known, not negative, and at
    most ``limit_s``. A time in the future means the clock was stepped back: such an age
    proves nothing, so the checkpoint does not count as recent."""
    return age_s is not None and 0 <= age_s <= limit_s


# -- resuming from a state file ------------------------------------------------------------------


def judge_resume(
    doc: object,
    *,
    app_id: str,
    shard: tuple[int, int],
    now_unix: float,
    resume_window_s: float,
) -> Resumable | str:
    """A state-file document → the session to resume, or the reason there is none.

    Not resumable: not a JSON object; another app id or shard; no session; older than
    ``resume_window_s``; the earlier process ended in FATAL; ``last_seq`` not a sequence number.
    """
    if not isinstance(doc, dict):
        return "not a JSON object"
    if doc.get("app_id") != app_id or doc.get("shard") != list(shard):
        return "written for another app id or shard"
    session_id = doc.get("session_id")
    if not isinstance(session_id, str) or not session_id:
        return "no session to resume"
    if not age_within(document_age_s(doc, now_unix), resume_window_s):
        return f"older than resume_window_s ({resume_window_s:g} s)"
    if doc.get("state") == _FATAL_STATE:
        return "the earlier process ended in FATAL"
    seq = doc.get("last_seq")
    if seq is not None and not _is_seq(seq):
        return "last_seq is not a sequence number"
    ready = doc.get("ready")
    return Resumable(session_id, seq, ready if isinstance(ready, dict) else None)


# -- resuming from an --output file ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutputVerdict:
    """What an ``--output`` file (one JSON line per dispatch) says about resuming.

    ``resumable``: the session of the last READY line and the ``s`` of the last complete line,
    or None. ``torn_bytes``: the length of a torn last line (the process died mid-write) that
    the caller must cut off the file; its event was never completely written and will be
    replayed. ``why_not``: None when resumable, else one line saying why not.
    """

    resumable: Resumable | None
    torn_bytes: int
    why_not: str | None


def judge_output(data: bytes, *, age_s: float, resume_window_s: float) -> OutputVerdict:
    """Judge the bytes of an ``--output`` file that was last written ``age_s`` seconds ago.

    Not resumable: empty; older than ``resume_window_s``; a complete line that is not JSON
    (``why_not`` starts ``"unreadable line: "`` and quotes at most QUOTE_BYTES of it); a last
    line without an integer ``s``; no READY line, or one naming no session.
    """
    complete = data[: data.rfind(b"\n") + 1]
    torn = len(data) - len(complete)

    def no(why: str) -> OutputVerdict:
        return OutputVerdict(None, torn, why)

    if not age_within(age_s, resume_window_s):
        return no(
            f"too old to resume: written {age_s:.1f} s ago (resume_window_s {resume_window_s:g} s)"
        )
    if not complete:
        return no("no complete line")
    last_seq: int | None = None
    for raw in reversed(complete.splitlines()):
        try:
            doc = json.loads(raw)
        except ValueError:
            return no(f"unreadable line: {raw[:QUOTE_BYTES].decode('utf-8', 'replace')}")
        if last_seq is None:
            if not isinstance(doc, dict) or type(doc.get("s")) is not int:
                return no("the last line has no integer s")
            last_seq = doc["s"]
        if isinstance(doc, dict) and doc.get("t") == "READY":
            data_ = doc.get("d")
            sid = data_.get("session_id") if isinstance(data_, dict) else None
            if not isinstance(sid, str) or not sid:
                return no("the last READY line names no session")
            return OutputVerdict(Resumable(sid, last_seq), torn, None)
    return no("no READY line: the session is unknown")


# -- the health of a running connection -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Health:
    """What a status probe concludes from a state file.

    ``healthy``: alive (and fresh, when a maximum age was asked for). ``problem``: None when
    healthy, else one line an operator can act on. ``snapshot``: the document, None when the
    file is missing or is no state file. ``age_s``: how old the document is, if known.
    """

    healthy: bool
    problem: str | None
    snapshot: dict[str, Any] | None
    age_s: float | None


def judge_health(
    text: str | None, *, now_unix: float, max_age_s: float | None, path: str = ""
) -> Health:
    """Judge a state file's text (None: the file is missing). ``path`` prefixes problems
    about the file itself. Healthy only when the state is ``alive`` and, with ``max_age_s``,
    the document is no older than that."""
    if text is None:
        return Health(False, f"{path}: no such state file (is qqconn run running?)", None, None)
    try:
        snap = json.loads(text)
    except ValueError as exc:
        return Health(False, f"{path}: not a qqconn state file (bad JSON: {exc})", None, None)
    if not isinstance(snap, dict) or not isinstance(snap.get("state"), str):
        return Health(False, f"{path}: not a qqconn state file (no 'state')", None, None)
    age_s = document_age_s(snap, now_unix)
    state = snap["state"]
    if state != "alive":
        fatal = snap.get("fatal")
        why = f": {fatal.get('reason')}" if isinstance(fatal, dict) and fatal.get("reason") else ""
        return Health(False, f"state is {state}{why}", snap, age_s)
    if max_age_s is not None:
        if age_s is None:
            return Health(False, "no usable updated_at to check --max-age", snap, None)
        if age_s < 0:
            return Health(False, f"updated_at lies {-age_s:.1f} s in the future", snap, age_s)
        if not age_within(age_s, max_age_s):
            return Health(
                False,
                f"stale: last written {age_s:.1f} s ago (> --max-age {max_age_s:g} s)",
                snap,
                age_s,
            )
    return Health(True, None, snap, age_s)
