"""``make mutate-sample``: a mutation score that fits a session, from a uniform random sample.

Usage: ``python bench/mutation_sample.py names|score [--size N] [--seed S] [--mutants DIR]``

A full ``make mutate`` is about 5,200 mutants at 10-35 a minute on two shared cores: hours. A
uniform random sample of them (by default 800, seed 20261204) gives the score to within about
3 points at 95 %:

* ``names`` prints the sample's mutant names, one per line, for ``mutmut run``. It needs the
  ``mutants/`` directory mutmut generates on its first run (the Makefile target makes one).
* ``score`` reads the verdicts mutmut stored for those names and prints killed, survived, no
  test and not yet checked, per module and in all, with the score and its 95 % interval (Wilson).
  A timeout counts as killed, as mutmut counts it.

The sample is drawn from the sorted names of every mutant mutmut generated, so the same code, size
and seed give the same sample; a code change renumbers the mutants of the functions it touches.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections import Counter, defaultdict
from pathlib import Path

from mutmut.stats import status_by_exit_code

#: The four columns; any other verdict of mutmut's (suspicious, segfault, ...) is shown beside.
COLUMNS = ("killed", "survived", "no tests", "not checked")


def verdicts(mutants: Path) -> dict[str, int | None]:
    """Every mutant name with its stored exit code (None: not checked yet)."""
    found: dict[str, int | None] = {}
    for meta in mutants.rglob("*.meta"):
        found.update(json.loads(meta.read_text(encoding="utf-8")).get("exit_code_by_key", {}))
    return found


def sample(names: list[str], size: int, seed: int) -> list[str]:
    ordered = sorted(names)
    return sorted(random.Random(seed).sample(ordered, min(size, len(ordered))))


def verdict(code: int | None) -> str:
    """mutmut's name for an exit code, with a timeout counted as killed (as mutmut scores it)."""
    status = status_by_exit_code[code]
    return "killed" if status == "timeout" else status


def module(name: str) -> str:
    """``qqconn.machine.table.x__row__mutmut_7`` -> ``qqconn.machine.table``."""
    head = name.split("__mutmut_")[0]
    return head.rsplit(".x", 1)[0] if ".x" in head else head


def score_line(counts: Counter[str]) -> str:
    checked = sum(n for v, n in counts.items() if v != "not checked")
    killed = counts["killed"]
    text = (
        f"killed {killed:4d}  survived {counts['survived']:4d}  no tests {counts['no tests']:4d}"
        f"  not checked {counts['not checked']:4d}"
    )
    others = {v: n for v, n in counts.items() if v not in COLUMNS}
    if others:
        text += f"  {others}"
    if checked:
        low, high = wilson(killed, checked)
        text += f"  score {100 * killed / checked:5.1f} % (95 %: {100 * low:.1f}-{100 * high:.1f})"
    return text


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of ``hits`` in ``n``: unlike p ± z·sqrt(p(1-p)/n), it does not
    shrink to nothing at 0 % or 100 %, which a module's few sampled mutants often are."""
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["names", "score"])
    parser.add_argument("--size", type=int, default=800)
    parser.add_argument("--seed", type=int, default=20261204)
    parser.add_argument("--mutants", type=Path, default=Path("mutants"))
    args = parser.parse_args(argv)
    if args.size < 1:
        parser.error("--size must be at least 1")
    found = verdicts(args.mutants)
    if not found:
        print(
            f"mutation_sample: no mutants under {args.mutants}/ (run `make mutate` or "
            "`make mutate-sample`, which generate them)",
            file=sys.stderr,
        )
        return 2
    chosen = sample(list(found), args.size, args.seed)
    if args.command == "names":
        print("\n".join(chosen))
        return 0
    by_module: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for name in chosen:
        by_module[module(name)][verdict(found[name])] += 1
    print(f"sample of {len(chosen)} of {len(found)} mutants (seed {args.seed})")
    for mod in sorted(by_module):
        print(f"  {mod:28s} {score_line(by_module[mod])}")
    total: Counter[str] = Counter()
    for counts in by_module.values():
        total.update(counts)
    print(f"  {'all':28s} {score_line(total)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
