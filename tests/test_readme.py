"""The README cannot drift from the code: its chart, its policy table and its examples."""

from __future__ import annotations

import ast
import re
from dataclasses import fields
from pathlib import Path

from qqconn import Policy

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_readme_chart_is_the_rendered_statechart() -> None:
    """The README's Mermaid chart is byte for byte statecharts/connection.mmd (run make statecharts)."""
    (chart,) = _blocks("mermaid")
    assert chart == (ROOT / "statecharts" / "connection.mmd").read_text(encoding="utf-8")


def test_policy_table_lists_every_field_with_its_default() -> None:
    """Every Policy field appears in the README's policy table, with its actual default."""
    table = README.split("## Policy", 1)[1].split("\n## ", 1)[0]
    defaults = Policy()
    for f in fields(Policy):
        row = next((line for line in table.splitlines() if f"`{f.name}`" in line), None)
        assert row is not None, f"{f.name} is missing from the README's policy table"
        value = getattr(defaults, f.name)
        if isinstance(value, tuple):
            shown = "(" + ", ".join(f"{v:g}" for v in value) + ")"
        elif f.name == "max_frame_bytes":
            shown = f"{value // (1024 * 1024)} MiB"
        else:
            shown = f"{value:g}"
        assert shown in row, f"{f.name}: README shows {row!r}, default is {shown}"


def test_python_examples_parse() -> None:
    """Every Python example in the README is valid Python."""
    examples = _blocks("python")
    assert len(examples) >= 2
    for code in examples:
        ast.parse(code)
