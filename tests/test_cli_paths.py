"""``qqconn run`` tries every path it will write before anything connects: a bad ``--output`` or
``--state-file`` is exit 2 with one line naming the option and what to do, never a traceback,
never a process that runs on while warning, and never a request to the gateway.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from qqconn.testing import FakeGateway
from tests.test_cli import SECRET, qqconn_run, usage

#: Each case: the option, a function making a bad path under tmp_path, and words the message has.
Bad = Callable[[Path], Path]


def _missing_dir(tmp: Path) -> Path:
    return tmp / "no-such-dir" / "file"


def _under_a_file(tmp: Path) -> Path:
    (tmp / "plain").write_text("x")
    return tmp / "plain" / "file"


def _a_directory(tmp: Path) -> Path:
    (tmp / "adir").mkdir()
    return tmp / "adir"


def _read_only_dir(tmp: Path) -> Path:
    ro = tmp / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    return ro / "file"


def _a_device(_tmp: Path) -> Path:
    return Path(os.devnull)


needs_permissions = pytest.mark.skipif(
    os.geteuid() == 0, reason="root writes through directory permissions"
)
CASES = [
    pytest.param(_missing_dir, "does not exist", id="missing-dir"),
    pytest.param(_under_a_file, "does not exist", id="under-a-file"),
    pytest.param(_a_directory, "is a directory", id="a-directory"),
    pytest.param(_a_device, "not a regular file", id="a-device"),
    pytest.param(_read_only_dir, "cannot", id="read-only-dir", marks=needs_permissions),
]


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("option", ["--output", "--state-file"])
@pytest.mark.parametrize(("bad", "words"), CASES)
async def test_a_bad_path_is_exit_2_before_anything_connects(
    option: str, bad: Bad, words: str, tmp_path: Path
) -> None:
    """The real `qqconn run` with a bad --output or --state-file: exit 2, one line, no request."""
    path = bad(tmp_path)
    async with FakeGateway(client_secret=SECRET) as gw:
        # qqconn_run passes a good --state-file of its own; the bad one, given last, wins.
        async with qqconn_run(gw, tmp_path, option, str(path)) as p:
            status = await p.exit_status(timeout=30)
        line = _one_line(p.err)
        assert status == 2, p.err
        assert line.startswith(f"qqconn: {option} {path}: ") and words in line
        assert "(" in line and ")" in line  # the fix, in parentheses
        assert gw.http_requests == [] and gw.connections == []
        assert p.out == "" and "state_file_failed" not in p.err  # not a warning loop


def test_a_foreign_file_is_never_replaced_by_the_state_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--state-file naming a file that is not a qqconn snapshot: exit 2, the file untouched."""
    monkeypatch.setenv("QQ_CLIENT_SECRET", SECRET)
    precious = tmp_path / "notes.txt"
    precious.write_text("my notes\n")
    status, out, err = usage(["run", "--app-id", "1", "--state-file", str(precious)], capsys)
    assert status == 2 and out == ""
    assert "not a qqconn state file" in _one_line(err)
    assert precious.read_text() == "my notes\n"
    # An empty file, or one of ours, is fine (the check passes and the run would go on).
    ours = tmp_path / "state.json"
    ours.write_text(json.dumps({"state": "stopped"}))
    from qqconn.cli import paths

    paths.check_state_file(ours)
    (tmp_path / "empty.json").write_text("")
    paths.check_state_file(tmp_path / "empty.json")


def test_output_and_state_file_must_differ(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same file as --output and --state-file (even spelled differently): exit 2, one line."""
    monkeypatch.setenv("QQ_CLIENT_SECRET", SECRET)
    same = tmp_path / "events.jsonl"
    other_spelling = tmp_path / "." / "events.jsonl"
    argv = ["run", "--app-id", "1", "--output", str(same), "--state-file", str(other_spelling)]
    status, _, err = usage(argv, capsys)
    assert status == 2 and "is also the --state-file" in _one_line(err)
    assert not same.exists()  # nothing was created by the refused run


def test_trying_output_leaves_no_file_behind(tmp_path: Path) -> None:
    """--output is tried by creating it; the probe removes what it created, and keeps a file
    that was there (its content untouched: it is the resume checkpoint)."""
    from qqconn.cli import paths

    new = tmp_path / "events.jsonl"
    paths.check_output(new)
    assert not new.exists()
    new.write_text('{"s":1}\n{"s":2')
    paths.check_output(new)
    assert new.read_text() == '{"s":1}\n{"s":2'


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--token-url", "https://"], "--token-url"),
        (["--api-base", "http:///path"], "--api-base"),
    ],
)
def test_a_url_without_a_host_is_refused(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An http(s) URL that names no host: exit 2 naming the option."""
    monkeypatch.setenv("QQ_CLIENT_SECRET", SECRET)
    status, _, err = usage(["run", "--app-id", "1", *argv], capsys)
    assert status == 2 and _one_line(err).startswith(f"qqconn: {named}: ")
    assert "names no host" in err
