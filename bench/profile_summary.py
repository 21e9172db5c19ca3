"""Summarise a py-spy ``--format raw`` profile (collapsed stacks): top self and inclusive time.

``python bench/profile_summary.py PROFILE.txt [--top 25] [--only SUBSTRING]`` prints the
functions with the most samples where they were the leaf (self) and anywhere on the stack
(inclusive), as shares of all samples kept. ``--only`` keeps the stacks that contain SUBSTRING
(for instance ``_read`` for qqconn's reader task); ``--idle`` keeps the samples where the
thread was idle (py-spy records them only with ``--idle``).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

_LINE = re.compile(r":\d+\)$")


def _name(frame: str) -> str:
    # "func (path/to/file.py:123)" -> "func (file.py)"; keep the module path short.
    m = re.match(r"(.*) \((.*):\d+\)$", frame)
    if not m:
        return frame
    func, path = m.groups()
    parts = path.split("/")
    short = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{func} ({short})"


def summarise(path: str, top: int = 25, only: str | None = None) -> str:
    self_c: Counter[str] = Counter()
    incl_c: Counter[str] = Counter()
    total = 0
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.rstrip("\n")
            if not line:
                continue
            stack, _, count = line.rpartition(" ")
            try:
                n = int(count)
            except ValueError:
                continue
            if only and only not in stack:
                continue
            frames = [_name(f) for f in stack.split(";")]
            total += n
            self_c[frames[-1]] += n
            for f in set(frames):
                incl_c[f] += n
    out = [f"{total} samples" + (f" in stacks containing {only!r}" if only else "")]
    out.append("  self%  function")
    for f, n in self_c.most_common(top):
        out.append(f"  {100 * n / max(total, 1):5.1f}  {f}")
    out.append("  incl%  function")
    # Frames on (nearly) every stack (main, run_forever, ...) say nothing: skip them.
    informative = [(f, n) for f, n in incl_c.most_common() if n < 0.98 * total]
    for f, n in informative[:top]:
        out.append(f"  {100 * n / max(total, 1):5.1f}  {f}")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("profile")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--only")
    a = ap.parse_args()
    print(summarise(a.profile, a.top, a.only))


if __name__ == "__main__":
    main()
