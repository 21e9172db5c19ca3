"""Delegated subcommands (``qqconn fake-gateway``): every argument reaches the target's
``main(argv)`` and its status comes back; a target that is not installed is one line, exit 2.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from qqconn.cli import delegate
from tests.test_cli import _env, usage


@pytest.fixture
def target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A scratch package on sys.path whose modules the test writes (forgotten afterwards)."""
    pkg = tmp_path / "qqconn_delegate_probe"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield pkg
    for name in [m for m in sys.modules if m.startswith("qqconn_delegate_probe")]:
        del sys.modules[name]


def _route(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    monkeypatch.setitem(delegate.DELEGATED, "probe", delegate.Delegated("probe", module, "a probe"))


def test_arguments_go_through_and_the_status_comes_back(
    target: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`qqconn probe --port 0 -v x`: the target's main gets exactly those arguments; exit 7."""
    (target / "ok.py").write_text(
        "def main(argv):\n    print('ARGV', argv)\n    return 7\n", encoding="utf-8"
    )
    _route(monkeypatch, "qqconn_delegate_probe.ok")
    status, out, _ = usage(["probe", "--port", "0", "-v", "x"], capsys)
    assert status == 7
    assert out.strip() == "ARGV ['--port', '0', '-v', 'x']"


def test_a_missing_target_is_one_line_and_exit_2(
    target: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A target module that does not exist: exit 2, one line saying it is not available."""
    _route(monkeypatch, "qqconn_delegate_probe.absent")
    status, out, err = usage(["probe", "--help"], capsys)
    assert status == 2 and out == ""
    assert err.strip().splitlines() == [
        "qqconn probe: not available in this installation (qqconn_delegate_probe.absent is missing)"
    ]


def test_a_target_missing_a_dependency_names_it(
    target: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A target whose own import fails for a missing package: exit 2 naming what to install."""
    (target / "needy.py").write_text("import qqconn_no_such_dependency\n", encoding="utf-8")
    _route(monkeypatch, "qqconn_delegate_probe.needy")
    status, _, err = usage(["probe"], capsys)
    assert status == 2
    assert "'qqconn_no_such_dependency'" in err and "pip install" in err
    assert len(err.strip().splitlines()) == 1


def test_a_target_without_main_is_not_available(
    target: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A target module without main(): exit 2, one line."""
    (target / "nomain.py").write_text("X = 1\n", encoding="utf-8")
    _route(monkeypatch, "qqconn_delegate_probe.nomain")
    status, _, err = usage(["probe"], capsys)
    assert status == 2 and "has no main()" in err


def test_fake_gateway_runs_the_testing_servers_main_or_says_it_is_missing() -> None:
    """The real `qqconn fake-gateway --help`: qqconn.testing.serve's own help (exit 0) where that
    module exists, else exit 2 with one line saying it is not available."""
    done = subprocess.run(
        [sys.executable, "-m", "qqconn", "fake-gateway", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(),
    )
    if importlib.util.find_spec("qqconn.testing.serve") is None:
        assert done.returncode == 2, done.stdout + done.stderr
        assert done.stderr.strip().splitlines() == [
            "qqconn fake-gateway: not available in this installation "
            "(qqconn.testing.serve is missing)"
        ]
    else:
        assert done.returncode == 0, done.stderr
        assert "usage:" in done.stdout.lower()


def test_delegated_commands_are_listed_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    """`qqconn --help` lists fake-gateway with its help line."""
    with pytest.raises(SystemExit) as stop:
        from qqconn import cli

        cli.main(["--help"])
    assert stop.value.code == 0
    assert "fake-gateway" in capsys.readouterr().out
