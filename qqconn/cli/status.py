"""``qqconn status``: read the state file ``qqconn run`` keeps; exit 0 only when it is alive and fresh.

The verdict (alive or not, how old is too old) is :func:`qqconn.checkpoint.judge_health`'s; this
module reads the file, supplies the freshness bound when ``--max-age`` is not given, maps the
verdict to an exit status and prints it. It imports neither the driver,
websockets nor httpx, so a health probe stays cheap.

Exit statuses: 0 healthy; 1 not alive, or stale; 2 the file is missing, unreadable or not a
qqconn snapshot.

**Fresh enough, without ``--max-age``.** While a connection is alive the manager rewrites the
file on every heartbeat ACK (at most once a second), and ``qqconn run`` rewrites it every
``--state-refresh`` seconds (10 by default) besides. A live process's file is therefore at most
about one heartbeat interval old; one that has missed two heartbeats would have left ``alive``
(the zombie rule) and written so. A snapshot is stale when it is older than::

    2 × heartbeat_interval_s + DEFAULT_STATE_REFRESH_S      (92.5 s at QQ's 41.25 s heartbeat)

``heartbeat_interval_s`` is read from the snapshot itself. A webhook receiver's snapshot has no
heartbeat; it carries ``state_refresh_s`` (how often it rewrites the file) and is stale after
``2 × state_refresh_s``. ``--max-age`` replaces the bound.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from qqconn.checkpoint import Health, age_within, judge_health
from qqconn.cli.options import (
    DEFAULT_STATE_REFRESH_S,
    EXIT_NOT_ALIVE,
    EXIT_OK,
    EXIT_USAGE,
    positive_float,
)

__all__ = ["add_parser", "cmd_status", "exit_status", "fresh_bound_s", "judge", "read_health"]


def add_parser(sub: Any) -> None:
    """Add ``status`` to the subcommands."""
    status = sub.add_parser(
        "status",
        help="print a state file; exit 0 only when the connection is alive (a health probe)",
        description="Print the snapshot `qqconn run --state-file` keeps. Exit 0 when the state "
        "is alive and the file is fresh, 1 when it is not, 2 when the file is missing or "
        "unreadable. Fresh: written within 2 x heartbeat_interval_s + "
        f"{DEFAULT_STATE_REFRESH_S:g} s (the state refresh), or within --max-age.",
        allow_abbrev=False,
    )
    status.add_argument(
        "--state-file", required=True, metavar="FILE", help="the file `qqconn run` keeps"
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of text")
    status.add_argument(
        "--max-age",
        type=positive_float("--max-age"),
        metavar="SECONDS",
        help="fail when the file was last written more than SECONDS ago (default: "
        f"2 x the snapshot's heartbeat interval + {DEFAULT_STATE_REFRESH_S:g} s)",
    )
    status.set_defaults(func=cmd_status)


# -- the verdict ------------------------------------------------------------------------------


def fresh_bound_s(snapshot: Mapping[str, Any]) -> float | None:
    """How old an ``alive`` snapshot may be without ``--max-age`` (see the module docstring)."""
    interval = _positive_number(snapshot.get("heartbeat_interval_s"))
    if interval is not None:
        return 2 * interval + DEFAULT_STATE_REFRESH_S
    # A webhook receiver has no heartbeat: it says how often it rewrites its file.
    refresh = _positive_number(snapshot.get("state_refresh_s"))
    return None if refresh is None else 2 * refresh


def _positive_number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        return None
    return float(value)


def judge(text: str | None, *, now_unix: float, max_age_s: float | None, path: str = "") -> Health:
    """:func:`qqconn.checkpoint.judge_health`, with :func:`fresh_bound_s` standing in for a
    ``--max-age`` that was not given (its age rule, :func:`~qqconn.checkpoint.age_within`).

    A file of several shards (``qqconn run --shards``: every shard's snapshot under
    ``"shards"``) is healthy only when the file itself is fresh and every shard in it is
    alive; the problem names the first shard that is not."""
    health = judge_health(text, now_unix=now_unix, max_age_s=max_age_s, path=path)
    snap = health.snapshot
    if snap is not None and isinstance(snap.get("shards"), dict):
        return _judge_shards(health, snap, now_unix=now_unix, max_age_s=max_age_s)
    if max_age_s is not None or not health.healthy or health.snapshot is None:
        return health
    bound = fresh_bound_s(health.snapshot)
    age = health.age_s
    if bound is None:
        problem = (
            "no heartbeat_interval_s or state_refresh_s to judge freshness by (pass --max-age)"
        )
    elif age is None:
        problem = "no usable updated_at to judge freshness by"
    elif age < 0:
        problem = f"updated_at lies {-age:.1f} s in the future"
    elif not age_within(age, bound):
        problem = (
            f"stale: last written {age:.1f} s ago "
            f"(> 2 x heartbeat interval + state refresh = {bound:g} s)"
        )
    else:
        return health
    return replace(health, healthy=False, problem=problem)


def _judge_shards(
    health: Health, snap: dict[str, Any], *, now_unix: float, max_age_s: float | None
) -> Health:
    shards = snap["shards"]
    if not shards:
        return replace(health, healthy=False, problem="no shard has started yet")
    for shard_id, doc in sorted(shards.items(), key=lambda kv: int(kv[0])):
        if not isinstance(doc, dict):
            return replace(health, healthy=False, problem=f"shard {shard_id}: not a snapshot")
        # A shard's own updated_at is that of its last change; the file's is when it was
        # written, which is what freshness means here.
        doc = {**doc, "updated_at_unix": snap.get("updated_at_unix")}
        verdict = judge(json.dumps(doc), now_unix=now_unix, max_age_s=max_age_s)
        if not verdict.healthy:
            return replace(health, healthy=False, problem=f"shard {shard_id}: {verdict.problem}")
    return replace(health, healthy=True, problem=None)


def read_health(
    path: str | os.PathLike[str], *, max_age_s: float | None = None, now: float | None = None
) -> Health:
    """Read and judge a state file (a missing or unreadable one is unhealthy, no snapshot)."""
    try:
        text: str | None = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        text = None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
        return Health(False, f"{path}: cannot read: {reason}", None, None)
    return judge(
        text, now_unix=time.time() if now is None else now, max_age_s=max_age_s, path=str(path)
    )


def exit_status(health: Health) -> int:
    """0 healthy, 1 a snapshot that is not alive or not fresh, 2 no snapshot at all."""
    if health.snapshot is None:
        return EXIT_USAGE
    return EXIT_OK if health.healthy else EXIT_NOT_ALIVE


# -- the command ------------------------------------------------------------------------------


def format_status(h: Health) -> str:
    """The snapshot for a person: one aligned ``key  value`` row each, the verdict last."""
    snap = h.snapshot or {}
    if isinstance(snap.get("shards"), dict):
        return _format_shards(h, snap)
    fatal = snap.get("fatal")
    rows: list[tuple[str, str]] = [("state", str(snap.get("state")))]
    if isinstance(fatal, dict):
        code = fatal.get("close_code")
        rows.append(
            (
                "fatal",
                f"{fatal.get('reason')} (close code {code if code is not None else 'none'}, "
                f"{'retryable' if fatal.get('retryable') else 'not retryable'})",
            )
        )
    shard = snap.get("shard")
    rows += [
        ("app id", str(snap.get("app_id"))),
        ("shard", f"{shard[0]}/{shard[1]}" if isinstance(shard, list) and len(shard) == 2 else "?"),
        ("session", str(snap.get("session_id") or "none")),
        ("last seq", str(snap.get("last_seq"))),
        ("attempt", str(snap.get("attempt"))),
        ("failed attempts in a row", str(snap.get("reconnect_attempts"))),
        ("quick drops in a row", str(snap.get("quick_disconnects"))),
    ]
    ending = snap.get("last_ending")
    if isinstance(ending, dict):
        code = ending.get("close_code")
        rows.append(
            (
                "last ending",
                f"{ending.get('reason')} ({ending.get('kind')}"
                + (f", close code {code})" if code is not None else ")"),
            )
        )
    interval = snap.get("heartbeat_interval_s")
    latency = snap.get("last_ack_latency_s")
    if isinstance(interval, (int, float)):
        beat = f"every {interval:g} s"
        if isinstance(latency, (int, float)):
            beat += f", last ACK after {latency * 1000:.1f} ms"
        rows.append(("heartbeat", beat))
    age = "" if h.age_s is None else f" ({h.age_s:.1f} s ago)"
    rows.append(("updated", f"{snap.get('updated_at')}{age}"))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    lines.append(f"{'healthy':<{width}}  " + ("yes" if h.healthy else f"no: {h.problem}"))
    return "\n".join(lines)


def _format_shards(h: Health, snap: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = [
        ("state", str(snap.get("state"))),
        ("app id", str(snap.get("app_id"))),
        ("shards", f"{snap.get('alive')} of {len(snap['shards'])} alive"),
    ]
    for shard_id, doc in sorted(snap["shards"].items(), key=lambda kv: int(kv[0])):
        doc = doc if isinstance(doc, dict) else {}
        fatal = doc.get("fatal")
        why = f" ({fatal.get('reason')})" if isinstance(fatal, dict) else ""
        rows.append((f"shard {shard_id}", f"{doc.get('state')}{why}"))
    age = "" if h.age_s is None else f" ({h.age_s:.1f} s ago)"
    rows.append(("updated", f"{snap.get('updated_at')}{age}"))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    lines.append(f"{'healthy':<{width}}  " + ("yes" if h.healthy else f"no: {h.problem}"))
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    """``qqconn status``: print the verdict; the exit status is the probe's answer."""
    health = read_health(args.state_file, max_age_s=args.max_age)
    if args.json:
        doc: dict[str, Any] = dict(health.snapshot or {})
        doc["healthy"] = health.healthy
        doc["problem"] = health.problem
        doc["age_s"] = None if health.age_s is None else round(health.age_s, 3)
        print(json.dumps(doc, sort_keys=True, ensure_ascii=False))
    elif health.snapshot is None:
        print(f"qqconn status: {health.problem}", file=sys.stderr)
    else:
        print(format_status(health))
    return exit_status(health)
