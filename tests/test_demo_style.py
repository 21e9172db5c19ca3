"""``qqconn demo`` on every terminal: the whole tour on an ASCII-only output, colour and glyphs on a
real terminal, neither with ``TERM=dumb``, glyphs without colour with ``NO_COLOR``.

The terminal cases run the real command on a pseudo-terminal and read until the first scenario's
heading (bold, ruled with box characters), then stop it: that line shows both choices.
"""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import sys
import time

import pytest

from qqconn.demo.style import ASCII_FALLBACKS, Style, style_for
from tests.test_cli import _env

HEADING = b"1/1  zombie"


def _demo_on_a_terminal(**env: str) -> bytes:
    """Run `qqconn demo --scenario zombie` on a pty with ``env``; return its output up to and
    including the first scenario heading (bounded: 30 s), then stop it."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "qqconn", "demo", "--scenario", "zombie"],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.PIPE,
        env=_env(PYTHONIOENCODING="utf-8", **env),
    )
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while HEADING not in seen or not seen.endswith(b"\n"):
            left = deadline - time.monotonic()
            assert left > 0, f"no heading within 30 s: {seen!r}"
            ready, _, _ = select.select([master], [], [], left)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # the child closed the terminal
                    chunk = b""
                assert chunk, f"the demo ended before its first heading: {seen!r}"
                seen += chunk
    finally:
        proc.kill()
        proc.wait(timeout=10)
        assert proc.stderr is not None
        proc.stderr.close()
        os.close(master)
    return seen


def test_a_real_terminal_gets_colour_and_box_characters() -> None:
    """On a terminal (TERM=xterm, NO_COLOR unset) the heading is coloured and ruled with ━."""
    out = _demo_on_a_terminal(TERM="xterm-256color")
    assert b"\x1b[" in out
    assert "━━ 1/1  zombie — ".encode() in out


def test_term_dumb_gets_no_escape_codes_and_plain_ascii() -> None:
    """TERM=dumb: not one escape code, not one non-ASCII byte; the rule is == and the dash -."""
    out = _demo_on_a_terminal(TERM="dumb")
    assert b"\x1b" not in out
    assert all(b < 128 for b in out), out
    assert b"== 1/1  zombie - " in out


def test_no_color_keeps_the_glyphs_but_drops_the_colour() -> None:
    """NO_COLOR=1 on a terminal: no escape code, the box characters stay."""
    out = _demo_on_a_terminal(TERM="xterm-256color", NO_COLOR="1")
    assert b"\x1b" not in out
    assert "━━ 1/1  zombie — ".encode() in out


def test_the_whole_tour_runs_on_an_ascii_only_output() -> None:
    """PYTHONIOENCODING=ascii (the tour used to stop silently after ten lines): the tour plays
    to its verdict, exit 0, and every byte written is ASCII."""
    done = subprocess.run(
        [sys.executable, "-m", "qqconn", "demo", "--scenario", "zombie", "--path"],
        capture_output=True,
        timeout=120,
        env=_env(PYTHONIOENCODING="ascii", TERM="xterm-256color"),
    )
    assert done.returncode == 0, done.stdout.decode("ascii", "replace") + done.stderr.decode()
    assert all(b < 128 for b in done.stdout)
    text = done.stdout.decode("ascii")
    assert "ALIVE -> BACKOFF" in text and "why " in text
    assert "summary" in text and "statechart edges taken" in text
    assert "ok 1 scenario behaved as docs/behaviour.md requires" in text
    assert text.count("\n") > 30


def test_fit_replaces_every_glyph_the_tour_writes_and_nothing_else() -> None:
    """Style.fit without Unicode: each glyph has its stand-in; a foreign character becomes ?."""
    plain = Style(False, unicode=False, encoding="ascii")
    for glyph, stand_in in ASCII_FALLBACKS.items():
        assert plain.fit(f"a {glyph} b") == f"a {stand_in} b"
    assert plain.fit("close 4009: 会话超时") == "close 4009: ????"
    fancy = Style(False, unicode=True, encoding="utf-8")
    assert fancy.fit("→ 会话") == "→ 会话"


class _Terminal(io.StringIO):
    """A text stream that says it is a terminal, with the encoding given."""

    def __init__(self, encoding: str) -> None:
        super().__init__()
        self._encoding = encoding

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._encoding

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("env", "encoding", "colour", "unicode"),
    [
        ({"TERM": "xterm"}, "utf-8", True, True),
        ({"TERM": "xterm", "NO_COLOR": ""}, "utf-8", True, True),  # empty: no-color.org
        ({"TERM": "xterm", "NO_COLOR": "1"}, "utf-8", False, True),
        ({"TERM": "dumb"}, "utf-8", False, False),
        ({"TERM": "xterm"}, "ascii", True, False),
        ({"TERM": "xterm"}, "latin-1", True, False),
    ],
    ids=["xterm", "no-color-empty", "no-color", "dumb", "ascii", "latin-1"],
)
def test_style_for_reads_the_environment_and_the_encoding(
    env: dict[str, str], encoding: str, colour: bool, unicode: bool
) -> None:
    """style_for: colour unless NO_COLOR (non-empty) or TERM=dumb; glyphs only if encodable."""
    style = style_for(_Terminal(encoding), env)
    assert (style.enabled, style.unicode) == (colour, unicode)
    assert style_for(io.StringIO(), {"TERM": "xterm"}).enabled is False  # not a terminal
    assert style_for(_Terminal(encoding), env, color=False).enabled is False
