"""Terminal styling for the tour: colour only where it is welcome, glyphs only where they show.

* **Colour** (ANSI SGR codes, the only escape codes the tour writes) when the output is a
  terminal, ``NO_COLOR`` is unset or empty (https://no-color.org) and ``TERM`` is not
  ``dumb``; an explicit ``color=True/False`` decides instead.
* **Unicode glyphs** (→ ✓ ✗ ━ ♥ · — ≥ …) when the output's encoding can write them and
  ``TERM`` is not ``dumb``; otherwise ASCII stand-ins (``->``, ``ok``, ``FAIL``, ``=``, ``>=``).
  Every line passes through :meth:`Style.fit` on its way out, so text from elsewhere (a close
  reason, a check's detail) cannot stop the tour on an ASCII-only terminal either: what the
  encoding cannot write becomes ``?``.
"""

from __future__ import annotations

import codecs
from collections.abc import Mapping
from typing import TextIO

__all__ = ["Style", "style_for"]

#: Each non-ASCII character the tour itself writes, and what stands in for it in plain ASCII.
ASCII_FALLBACKS: Mapping[str, str] = {
    "→": "->",
    "✓": "ok",
    "✗": "FAIL",
    "·": "-",
    "━": "=",
    "♥": "hb",
    "—": "-",
    "–": "-",
    "≥": ">=",
    "≤": "<=",
    "…": "...",
    "×": "x",
    "±": "+/-",
}
_TRANSLATE = str.maketrans(dict(ASCII_FALLBACKS))


class Style:
    """Colours and glyphs for one output stream (see the module docstring)."""

    CODES: Mapping[str, str] = {
        "bold": "1",
        "dim": "2",
        "red": "31",
        "green": "32",
        "yellow": "33",
        "blue": "34",
        "magenta": "35",
        "cyan": "36",
    }
    STATE_COLOURS: Mapping[str, str] = {
        "CONNECTING": "cyan",
        "IDENTIFIED": "cyan",
        "ALIVE": "green",
        "QUICK_DROPPED": "yellow",
        "BACKOFF": "yellow",
        "FATAL": "red",
        "STOPPED": "blue",
    }

    def __init__(self, enabled: bool, unicode: bool, encoding: str = "utf-8") -> None:
        self.enabled = enabled
        self.unicode = unicode
        self.encoding = encoding
        self.arrow = "→" if unicode else "->"
        self.ok = "✓" if unicode else "ok"
        self.bad = "✗" if unicode else "FAIL"
        self.dot = "·" if unicode else "-"
        self.rule = "━" if unicode else "="
        self.heart = "♥" if unicode else "hb"
        self.dash = "—" if unicode else "-"

    def __call__(self, text: str, *styles: str) -> str:
        if not self.enabled or not styles:
            return text
        codes = ";".join(self.CODES[s] for s in styles)
        return f"\033[{codes}m{text}\033[0m"

    def state(self, name: str, width: int = 0) -> str:
        return self(name.ljust(width), self.STATE_COLOURS.get(name, "bold"))

    def fit(self, text: str) -> str:
        """``text`` as this output can write it: ASCII stand-ins, then ``?`` for the rest."""
        if not self.unicode:
            text = text.translate(_TRANSLATE)
        return text.encode(self.encoding, errors="replace").decode(self.encoding)


def _encoding(out: TextIO) -> str:
    name = getattr(out, "encoding", None) or "utf-8"
    try:
        return codecs.lookup(name).name
    except LookupError:
        return "ascii"


def style_for(out: TextIO, env: Mapping[str, str], *, color: bool | None = None) -> Style:
    """The style for ``out`` under environment ``env`` (``color`` overrides the colour choice)."""
    dumb = env.get("TERM", "") == "dumb"
    if color is None:
        color = not dumb and not env.get("NO_COLOR") and _isatty(out)
    encoding = _encoding(out)
    try:
        "".join(ASCII_FALLBACKS).encode(encoding)
        unicode = not dumb
    except UnicodeEncodeError:
        unicode = False
    return Style(color, unicode, encoding)


def _isatty(out: TextIO) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):  # a closed or unusual stream is no terminal
        return False
