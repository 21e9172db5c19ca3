"""qqconn.checkpoint: the state-file schema, the resume judgement, --output files, health."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qqconn.checkpoint import (
    SCHEMA_KEYS,
    Health,
    OutputVerdict,
    Resumable,
    age_within,
    document_age_s,
    judge_health,
    judge_output,
    judge_resume,
    state_document,
)

NOW = 1_800_000_000.0
APP = "1000"
SHARD = (0, 1)
WINDOW = 300.0


def _doc(**patch: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "app_id": APP,
        "shard": [0, 1],
        "session_id": "sess-1",
        "last_seq": 5,
        "state": "alive",
        "updated_at_unix": NOW - 10,
    }
    doc.update(patch)
    return doc


def _resume(doc: object) -> Resumable | str:
    return judge_resume(doc, app_id=APP, shard=SHARD, now_unix=NOW, resume_window_s=WINDOW)


# -- the document ----------------------------------------------------------------------------------


def test_state_document_adds_identity_and_both_timestamps() -> None:
    """state_document keeps the fields and adds app_id, shard as a list, ISO and Unix time."""
    fields = {"state": "alive", "session_id": "s", "last_seq": 3}
    doc = state_document(fields, app_id=APP, shard=(2, 4), now_unix=NOW + 0.1234)
    assert doc["state"] == "alive" and doc["session_id"] == "s" and doc["last_seq"] == 3
    assert doc["app_id"] == APP
    assert doc["shard"] == [2, 4]
    assert doc["updated_at_unix"] == NOW + 0.1234
    assert doc["updated_at"] == "2027-01-15T08:00:00.123+00:00"
    assert fields == {"state": "alive", "session_id": "s", "last_seq": 3}  # not mutated
    json.dumps(doc)  # JSON-able


def test_schema_keys_name_what_the_document_adds() -> None:
    """SCHEMA_KEYS holds the keys state_document adds and the resume checkpoint's keys."""
    added = set(state_document({}, app_id=APP, shard=SHARD, now_unix=NOW))
    assert added <= SCHEMA_KEYS
    assert {"state", "session_id", "last_seq", "received_seq", "fatal"} <= SCHEMA_KEYS


def test_state_document_round_trips_into_a_resume() -> None:
    """A document written now for this app and shard is resumable from its checkpoint."""
    doc = state_document(
        {"state": "alive", "session_id": "abc", "last_seq": 9},
        app_id=APP,
        shard=SHARD,
        now_unix=NOW,
    )
    assert _resume(json.loads(json.dumps(doc))) == Resumable("abc", 9)


# -- the age rule ------------------------------------------------------------------------------------


def test_document_age_prefers_unix_time_then_iso() -> None:
    """The age comes from updated_at_unix, else from the ISO updated_at (naive means UTC)."""
    assert document_age_s({"updated_at_unix": NOW - 7}, NOW) == 7
    iso = datetime.fromtimestamp(NOW - 30, UTC).isoformat()
    assert document_age_s({"updated_at": iso}, NOW) == pytest.approx(30)
    naive = datetime.fromtimestamp(NOW - 30, UTC).replace(tzinfo=None).isoformat()
    assert document_age_s({"updated_at": naive}, NOW) == pytest.approx(30)
    assert document_age_s({"updated_at_unix": NOW - 1, "updated_at": iso}, NOW) == 1


@pytest.mark.parametrize(
    "doc",
    [{}, {"updated_at": "yesterday"}, {"updated_at_unix": True}, {"updated_at_unix": "1"}],
    ids=["none", "bad-iso", "bool", "string"],
)
def test_document_age_is_unknown_without_a_usable_stamp(doc: dict[str, Any]) -> None:
    """No usable timestamp gives no age (None), never a guess."""
    assert document_age_s(doc, NOW) is None


def test_age_rule_boundaries() -> None:
    """Recent means known, ≥ 0 and ≤ the limit: the limit itself is recent, the future is not."""
    assert age_within(0.0, 10.0)
    assert age_within(10.0, 10.0)
    assert not age_within(10.000001, 10.0)
    assert not age_within(-0.5, 10.0)
    assert not age_within(None, 10.0)


# -- judge_resume ---------------------------------------------------------------------------------------


def test_recent_own_document_is_resumable() -> None:
    """Same app id and shard, a session, recent, not FATAL: resume that session from last_seq."""
    assert _resume(_doc()) == Resumable("sess-1", 5)
    assert _resume(_doc(last_seq=None)) == Resumable("sess-1", None)
    assert _resume(_doc(updated_at_unix=NOW - WINDOW)) == Resumable("sess-1", 5)


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ([1, 2], "not a JSON object"),
        (_doc(app_id="999"), "written for another app id or shard"),
        (_doc(shard=[1, 2]), "written for another app id or shard"),
        (_doc(session_id=None), "no session to resume"),
        (_doc(session_id=""), "no session to resume"),
        (_doc(updated_at_unix=NOW - 3600), "older than resume_window_s (300 s)"),
        (_doc(updated_at_unix=NOW + 60), "older than resume_window_s (300 s)"),
        ({k: v for k, v in _doc().items() if k != "updated_at_unix"}, "older than"),
        (_doc(state="fatal"), "the earlier process ended in FATAL"),
        (_doc(last_seq=-1), "last_seq is not a sequence number"),
        (_doc(last_seq=True), "last_seq is not a sequence number"),
        (_doc(last_seq="5"), "last_seq is not a sequence number"),
    ],
    ids=[
        "not-object",
        "app",
        "shard",
        "no-session",
        "empty-session",
        "old",
        "future",
        "no-stamp",
        "fatal",
        "negative-seq",
        "bool-seq",
        "string-seq",
    ],
)
def test_not_resumable_documents_say_why(doc: object, reason: str) -> None:
    """Every reason a state file is not resumed is named in one line."""
    verdict = _resume(doc)
    assert isinstance(verdict, str)
    assert verdict.startswith(reason)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(), st.lists))
def test_judge_resume_never_raises(doc: object) -> None:
    """Any JSON value gives a Resumable or a reason, never an exception."""
    assert isinstance(_resume(doc), (Resumable, str))


# -- judge_output -----------------------------------------------------------------------------------------

READY = b'{"s":1,"t":"READY","id":null,"d":{"session_id":"sess-9"}}\n'
X2 = b'{"s":2,"t":"X","id":"X:2","d":{}}\n'


def _output(data: bytes, age_s: float = 1.0) -> OutputVerdict:
    return judge_output(data, age_s=age_s, resume_window_s=WINDOW)


def test_output_session_from_last_ready_seq_from_last_line() -> None:
    """The session is the last READY line's; s is the last complete line's."""
    assert _output(READY + X2) == OutputVerdict(Resumable("sess-9", 2), 0, None)
    assert _output(READY) == OutputVerdict(Resumable("sess-9", 1), 0, None)
    later = b'{"s":3,"t":"READY","id":null,"d":{"session_id":"sess-10"}}\n'
    assert _output(READY + X2 + later).resumable == Resumable("sess-10", 3)


def test_output_torn_last_line_is_measured_and_ignored() -> None:
    """A torn last line is reported as bytes to cut off and does not count as written."""
    torn = b'{"s":3,"t":"X","id":"X:3","d":{'
    verdict = _output(READY + X2 + torn)
    assert verdict == OutputVerdict(Resumable("sess-9", 2), len(torn), None)


@pytest.mark.parametrize(
    ("data", "age_s", "why"),
    [
        (b"", 1.0, "no complete line"),
        (b'{"s":1,"t":"READY"', 1.0, "no complete line"),
        (READY, WINDOW + 1, "too old to resume"),
        (READY, -5.0, "too old to resume"),
        (X2, 1.0, "no READY line"),
        (READY + b"garbage\n" + X2, 1.0, "unreadable line: garbage"),
        (READY + b'{"t":"X"}\n', 1.0, "the last line has no integer s"),
        (READY + b'{"s":true}\n', 1.0, "the last line has no integer s"),
        (READY + b"[1]\n", 1.0, "the last line has no integer s"),
        (b'{"s":1,"t":"READY","d":{}}\n', 1.0, "the last READY line names no session"),
        (b'{"s":1,"t":"READY","d":[]}\n', 1.0, "the last READY line names no session"),
    ],
    ids=[
        "empty",
        "only-torn",
        "old",
        "future",
        "no-ready",
        "garbage",
        "no-s",
        "bool-s",
        "not-object",
        "no-session",
        "d-not-object",
    ],
)
def test_output_not_resumable_says_why(data: bytes, age_s: float, why: str) -> None:
    """Every reason an --output file gives no checkpoint is named."""
    verdict = _output(data, age_s)
    assert verdict.resumable is None
    assert verdict.why_not is not None and verdict.why_not.startswith(why)


def test_output_unreadable_line_is_quoted_short() -> None:
    """An unreadable line is quoted with at most 80 bytes of it."""
    verdict = _output(READY + b"x" * 500 + b"\n")
    assert verdict.why_not == "unreadable line: " + "x" * 80


def test_old_output_still_reports_its_torn_line() -> None:
    """Even when too old to resume, a torn last line is reported so the caller can cut it."""
    assert _output(READY + b'{"s"', age_s=WINDOW * 2).torn_bytes == 4


# -- judge_health -----------------------------------------------------------------------------------------


def _health(text: str | None, max_age_s: float | None = None) -> Health:
    return judge_health(text, now_unix=NOW, max_age_s=max_age_s, path="state.json")


def test_alive_is_healthy() -> None:
    """An alive document is healthy, with its age and snapshot."""
    h = _health(json.dumps(_doc()))
    assert h.healthy and h.problem is None
    assert h.snapshot is not None and h.snapshot["session_id"] == "sess-1"
    assert h.age_s == 10


@pytest.mark.parametrize(
    ("text", "max_age_s", "problem", "has_snapshot"),
    [
        (None, None, "state.json: no such state file (is qqconn run running?)", False),
        ("{not json", None, "state.json: not a qqconn state file (bad JSON:", False),
        ('{"hello": 1}', None, "state.json: not a qqconn state file (no 'state')", False),
        ('"alive"', None, "state.json: not a qqconn state file (no 'state')", False),
        (json.dumps(_doc(state="backoff")), None, "state is backoff", True),
        (
            json.dumps(_doc(state="fatal", fatal={"reason": "bot banned"})),
            None,
            "state is fatal: bot banned",
            True,
        ),
        (
            json.dumps(_doc(updated_at_unix=NOW - 30)),
            10.0,
            "stale: last written 30.0 s ago (> --max-age 10 s)",
            True,
        ),
        (
            json.dumps({k: v for k, v in _doc().items() if k != "updated_at_unix"}),
            10.0,
            "no usable updated_at to check --max-age",
            True,
        ),
        (json.dumps(_doc(updated_at_unix=NOW + 30)), 10.0, "updated_at lies 30.0 s", True),
    ],
    ids=[
        "missing",
        "garbage",
        "no-state",
        "not-object",
        "backoff",
        "fatal",
        "stale",
        "no-stamp",
        "future",
    ],
)
def test_unhealthy_documents_name_the_problem(
    text: str | None, max_age_s: float | None, problem: str, has_snapshot: bool
) -> None:
    """Not alive, stale, missing or not a state file: unhealthy, with one actionable line."""
    h = _health(text, max_age_s)
    assert not h.healthy
    assert h.problem is not None and h.problem.startswith(problem)
    assert (h.snapshot is not None) is has_snapshot


def test_health_max_age_boundary() -> None:
    """With --max-age, exactly max_age_s old is still healthy; a moment more is stale."""
    assert _health(json.dumps(_doc(updated_at_unix=NOW - 10)), 10.0).healthy
    assert not _health(json.dumps(_doc(updated_at_unix=NOW - 10.001)), 10.0).healthy


def test_health_without_max_age_ignores_age() -> None:
    """Without --max-age, an old alive document is healthy (age reported, not judged)."""
    h = _health(json.dumps(_doc(updated_at_unix=NOW - 86_400)))
    assert h.healthy and h.age_s == 86_400
