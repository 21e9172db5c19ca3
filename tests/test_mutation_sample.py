"""``make mutate-sample`` (bench/mutation_sample.py) on a synthetic ``mutants/`` directory: the
sample is the same for the same names, size and seed, and its score counts mutmut's verdicts as
mutmut does, with an interval that holds at 0 % and 100 %."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import mutation_sample  # noqa: E402


def _mutants(root: Path, codes: dict[str, int | None]) -> Path:
    """A mutants/ tree of two .meta files holding ``codes`` (mutmut's layout: one per source)."""
    by_file: dict[str, dict[str, int | None]] = {}
    for name, code in codes.items():
        by_file.setdefault(mutation_sample.module(name), {})[name] = code
    for mod, keys in by_file.items():
        meta = root / "mutants" / (mod.replace(".", "/") + ".py.meta")
        meta.parent.mkdir(parents=True, exist_ok=True)
        meta.write_text(json.dumps({"exit_code_by_key": keys}), encoding="utf-8")
    return root / "mutants"


def test_the_sample_depends_only_on_the_names_the_size_and_the_seed(tmp_path: Path) -> None:
    names = [f"qqconn.policy.x_f__mutmut_{i}" for i in range(50)]
    once = mutation_sample.sample(names, 10, 7)
    assert once == mutation_sample.sample(list(reversed(names)), 10, 7)
    assert len(set(once)) == 10 and set(once) <= set(names)
    assert once != mutation_sample.sample(names, 10, 8)
    assert mutation_sample.sample(names, 500, 7) == sorted(names)


def test_module_names_for_functions_and_methods() -> None:
    assert mutation_sample.module("qqconn.machine.table.x__row__mutmut_7") == (
        "qqconn.machine.table"
    )
    assert mutation_sample.module("qqconn.driver.shards.xǁBotShardsǁrun__mutmut_42") == (
        "qqconn.driver.shards"
    )


def test_score_counts_verdicts_as_mutmut_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    codes: dict[str, int | None] = {
        "qqconn.policy.x_a__mutmut_1": 1,  # killed
        "qqconn.policy.x_a__mutmut_2": 36,  # timeout: killed
        "qqconn.policy.x_a__mutmut_3": 0,  # survived
        "qqconn.endings.x_b__mutmut_1": 33,  # no tests
        "qqconn.endings.x_b__mutmut_2": None,  # not checked
    }
    mutants = _mutants(tmp_path, codes)
    assert mutation_sample.main(["score", "--size", "5", "--mutants", str(mutants)]) == 0
    out = capsys.readouterr().out
    policy = next(line for line in out.splitlines() if "qqconn.policy" in line)
    assert "killed    2  survived    1  no tests    0" in policy
    assert "score  66.7 %" in policy
    total = next(line for line in out.splitlines() if line.strip().startswith("all"))
    # Not checked is not in the score; no tests is, as a mutant nothing killed.
    assert "killed    2  survived    1  no tests    1  not checked    1" in total
    assert "score  50.0 %" in total
    assert mutation_sample.main(["names", "--size", "5", "--mutants", str(mutants)]) == 0
    assert capsys.readouterr().out.split() == sorted(codes)


def test_the_interval_holds_at_the_extremes() -> None:
    low, high = mutation_sample.wilson(5, 5)
    assert high == 1.0 and 0.4 < low < 0.6
    low, high = mutation_sample.wilson(0, 5)
    assert low == 0.0 and 0.4 < high < 0.6
    low, high = mutation_sample.wilson(556, 800)
    assert low == pytest.approx(0.662, abs=0.001) and high == pytest.approx(0.726, abs=0.001)


def test_no_mutants_directory_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mutation_sample.main(["score", "--mutants", str(tmp_path / "none")]) == 2
    assert "no mutants under" in capsys.readouterr().err
