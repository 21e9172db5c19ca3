"""``qqconn status`` as a health probe: exit 0 only for an alive, fresh snapshot; 1 for any other
state or a stale file (with or without ``--max-age``); 2 for a missing or foreign file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from qqconn.cli.status import fresh_bound_s, judge
from tests.test_cli import _env, usage


def _snapshot(
    state: str,
    *,
    age_s: float = 0.0,
    fatal: dict[str, Any] | None = None,
    heartbeat_s: float | None = 41.25,
) -> str:
    updated = datetime.now(UTC) - timedelta(seconds=age_s)
    return json.dumps(
        {
            "state": state,
            "app_id": "1000",
            "shard": [0, 1],
            "session_id": "abc" if state == "alive" else None,
            "last_seq": 42,
            "attempt": 2,
            "reconnect_attempts": 0,
            "quick_disconnects": 0,
            "resume_failures": 0,
            "heartbeat_interval_s": heartbeat_s,
            "last_ack_latency_s": 0.012,
            "updated_at": updated.isoformat(timespec="milliseconds"),
            "fatal": fatal,
        }
    )


BANNED = {"reason": "bot banned", "close_code": 4915, "retryable": False}


@pytest.mark.parametrize(
    ("content", "extra", "want"),
    [
        (("alive", 0.0, None), [], 0),
        (("alive", 3.0, None), ["--max-age", "10"], 0),
        (("alive", 30.0, None), ["--max-age", "10"], 1),
        (("backoff", 0.0, None), [], 1),
        (("fatal", 0.0, BANNED), [], 1),
        ("{not json", [], 2),
        ('{"hello": 1}', [], 2),
        (None, [], 2),
    ],
    ids=["alive", "fresh", "stale", "backoff", "fatal", "garbage", "not-a-snapshot", "missing"],
)
def test_status_exit_codes(
    content: tuple[str, float, dict[str, Any] | None] | str | None,
    extra: list[str],
    want: int,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """status: 0 only when alive (and fresh with --max-age), 1 otherwise, 2 missing/unparsable."""
    path = tmp_path / "state.json"
    if isinstance(content, tuple):
        state, age_s, fatal = content
        path.write_text(_snapshot(state, age_s=age_s, fatal=fatal))
    elif content is not None:
        path.write_text(content)
    status, out, err = usage(["status", "--state-file", str(path), *extra], capsys)
    assert status == want, out + err
    if want == 2:
        assert str(path) in err and out == ""
    else:
        assert "healthy" in out and ("yes" in out) == (want == 0)


def test_status_json_reports_health_and_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """status --json: the snapshot plus healthy, problem and age_s."""
    path = tmp_path / "state.json"
    path.write_text(_snapshot("fatal", fatal=BANNED))
    status, out, _ = usage(["status", "--state-file", str(path), "--json"], capsys)
    doc = json.loads(out)
    assert status == 1
    assert doc["healthy"] is False and "bot banned" in doc["problem"]
    assert doc["fatal"] == BANNED and doc["age_s"] is not None


def test_status_human_output_names_the_fatal_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """status for a person: state, fatal reason with close code, counters, age."""
    path = tmp_path / "state.json"
    path.write_text(_snapshot("fatal", fatal=BANNED))
    _, out, _ = usage(["status", "--state-file", str(path)], capsys)
    assert "fatal" in out and "bot banned (close code 4915, not retryable)" in out
    assert "s ago" in out


def test_status_stays_cheap_for_a_probe(tmp_path: Path) -> None:
    """`qqconn status` imports neither the driver, websockets nor httpx."""
    path = tmp_path / "state.json"
    path.write_text(_snapshot("alive"))
    code = (
        "import sys; from qqconn import cli; "
        f"status = cli.main(['status', '--state-file', {str(path)!r}]); "
        "heavy = [m for m in ('qqconn.driver', 'websockets', 'httpx') if m in sys.modules]; "
        "print('HEAVY', heavy); sys.exit(status)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, env=_env()
    )
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stdout


@pytest.mark.parametrize(
    ("age_s", "heartbeat_s", "extra", "want"),
    [
        (86_400.0, 41.25, [], 1),
        (60.0, 41.25, [], 0),
        (30.0, 0.5, [], 1),
        (30.0, 0.5, ["--max-age", "100"], 0),
        (5.0, 41.25, ["--max-age", "2"], 1),
    ],
    ids=["day-old", "within-bound", "fast-heartbeat-stale", "max-age-wider", "max-age-tighter"],
)
def test_status_judges_freshness_without_max_age(
    age_s: float,
    heartbeat_s: float,
    extra: list[str],
    want: int,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An alive snapshot older than 2 x heartbeat + state refresh is stale; --max-age replaces it."""
    path = tmp_path / "state.json"
    path.write_text(_snapshot("alive", age_s=age_s, heartbeat_s=heartbeat_s))
    status, out, err = usage(["status", "--state-file", str(path), *extra], capsys)
    assert status == want, out + err
    assert ("stale" in out) == (want == 1)


def test_the_freshness_bound_is_two_heartbeats_and_a_state_refresh() -> None:
    """fresh_bound_s: 2 x heartbeat_interval_s + 10 s; no usable interval gives no bound."""
    assert fresh_bound_s({"heartbeat_interval_s": 41.25}) == 92.5
    assert fresh_bound_s({"heartbeat_interval_s": 0.5}) == 11.0
    for bad in (None, "41", True, 0, -1):
        assert fresh_bound_s({"heartbeat_interval_s": bad}) is None


def test_an_alive_snapshot_without_a_heartbeat_interval_is_not_healthy() -> None:
    """Without heartbeat_interval_s (and no --max-age) freshness cannot be judged: unhealthy."""
    text = _snapshot("alive", heartbeat_s=None)
    now = datetime.now(UTC).timestamp()
    health = judge(text, now_unix=now, max_age_s=None, path="s.json")
    assert not health.healthy and health.problem is not None and "--max-age" in health.problem
    assert judge(text, now_unix=now, max_age_s=60.0).healthy


def test_a_day_old_alive_file_fails_the_real_probe(tmp_path: Path) -> None:
    """`qqconn status` (a subprocess, no --max-age) on a day-old alive file: exit 1, says stale."""
    path = tmp_path / "state.json"
    path.write_text(_snapshot("alive", age_s=86_400.0))
    done = subprocess.run(
        [sys.executable, "-m", "qqconn", "status", "--state-file", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(),
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "healthy                   no: stale: last written 864" in done.stdout
    assert "2 x heartbeat interval + state refresh = 92.5 s" in done.stdout


def test_the_readme_states_the_bound_status_applies() -> None:
    """The README's status section gives the same bound (2 x interval + 10 s; 92.5 s at 41.25)."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## `qqconn status` as a health probe", 1)[1].split("\n## ", 1)[0]
    assert "2 × heartbeat_interval_s + 10 s" in section
    assert f"{fresh_bound_s({'heartbeat_interval_s': 41.25}):g} s for QQ's 41.25 s" in section


def test_status_names_the_last_ending_by_the_machines_kind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A snapshot with last_ending: status prints its reason, kind and close code on one row."""
    doc = json.loads(_snapshot("alive"))
    doc["last_ending"] = {"kind": "zombie", "reason": "zombie: no ACK", "close_code": 4000}
    path = tmp_path / "state.json"
    path.write_text(json.dumps(doc))
    status, out, _ = usage(["status", "--state-file", str(path)], capsys)
    assert status == 0
    assert "last ending               zombie: no ACK (zombie, close code 4000)" in out
    doc["last_ending"] = {"kind": "dropped", "reason": "connection lost", "close_code": None}
    path.write_text(json.dumps(doc))
    _, out, _ = usage(["status", "--state-file", str(path)], capsys)
    assert "last ending               connection lost (dropped)" in out


def test_a_webhook_snapshot_is_judged_by_its_own_refresh_period(tmp_path: Path) -> None:
    """A webhook receiver's snapshot (no heartbeat) is fresh within 2 × state_refresh_s, stale after."""

    doc = {"state": "alive", "transport": "webhook", "state_refresh_s": 10.0}
    fresh = judge(json.dumps({**doc, "updated_at_unix": 1000.0}), now_unix=1019.0, max_age_s=None)
    stale = judge(json.dumps({**doc, "updated_at_unix": 1000.0}), now_unix=1021.0, max_age_s=None)
    assert fresh.healthy, fresh.problem
    assert not stale.healthy and stale.problem is not None and "stale" in stale.problem
