"""Hostile frames: Hypothesis-generated server frames sent by the fake gateway over real sockets.

Non-JSON text, binary frames, truncated JSON, deeply nested JSON, huge frames, wrong types in
every field, unknown ops, absurd Hello intervals, negative and non-increasing ``s``: the manager
never crashes, never hangs, never spins, logs every frame it cannot use (``qqconn.bad_frame``,
the frame shortened), and keeps its guarantees: a dispatch sent after the batch reaches the host
exactly once (a broken connection that resumes is fine). ``Policy.max_frame_bytes`` is passed
to websockets' ``max_size`` and enforced at its exact boundary.

One gateway and one manager serve every Hypothesis example of a test (the fixture is set up
once per test function; pytest-asyncio runs each example on the same event loop).

Which frames are "bad" is decided here, independently of ``qqconn.protocol``, from the frame
contract of docs/behaviour.md §15 and the parser's documented leniency: a frame is bad when it is
binary, not JSON, not an object, has no integer ``op`` or an op qqconn does not know, or is a
dispatch without a usable ``t`` (READY without a string ``session_id``). Everything else is
used or ignored (an unexpected Hello, READY or RESUMED is a protocol oddity, logged as such).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from qqconn import ConnectionManager, FatalError, State
from qqconn.endings import EndingKind
from qqconn.protocol import Dispatch
from qqconn.testing import MISSING, NO_OVERRIDE, FakeGateway
from tests.driver_support import FAST, manager_for

#: FAST, with budgets no hostile batch can exhaust (a batch may end a connection on purpose,
#: a few in a row are quick drops; that FATAL would be correct and is tested elsewhere), a
#: 64 KiB frame limit, and an ACK deadline of a whole interval.
HOSTILE = replace(
    FAST,
    max_quick_disconnects=10_000,
    max_reconnect_attempts=10_000,
    max_frame_bytes=64 * 1024,
    heartbeat_ack_timeout_ratio=1.0,
)
#: 500 ms: a loaded 2-core machine can delay an ACK past a shorter interval (a false zombie).
HB_MS = 500
KNOWN_OPS = frozenset({0, 1, 7, 9, 10, 11})
ALIVE_ISH = {State.IDENTIFIED, State.ALIVE, State.BACKOFF, State.CONNECTING}
#: A bad_frame log line carries the error with the frame shortened to 200 characters.
MAX_ERROR_CHARS = 300


def _loads_on_a_fresh_stack(text: str) -> Any:
    """json.loads in a new thread: the C decoder's nesting limit counts the caller's Python
    stack, and this test runs deep inside pytest and Hypothesis, the driver's reader does not."""
    result: list[Any] = []

    def parse() -> None:
        try:
            result.append(json.loads(text))
        except (ValueError, RecursionError) as exc:
            result.append(exc)

    worker = threading.Thread(target=parse)
    worker.start()
    worker.join()
    return result[0]


#: Endings the client's own watchdogs cause (never a frame the batch sent).
OWN_WATCHDOG_KINDS = frozenset(
    k.value
    for k in (EndingKind.ZOMBIE, EndingKind.STALE, EndingKind.SEND_FAILED, EndingKind.DEADLINE)
)


def expected_bad(frame: str | bytes) -> bool:
    """Must qqconn reject this frame (log ``qqconn.bad_frame``)? See the module docstring."""
    if isinstance(frame, bytes):
        return True
    msg = _loads_on_a_fresh_stack(frame)
    if isinstance(msg, (ValueError, RecursionError)):
        return True
    if not isinstance(msg, dict):
        return True
    op = msg.get("op")
    if type(op) is not int or op not in KNOWN_OPS:
        return True
    if op == 0:
        t = msg.get("t")
        if t == "READY":
            d = msg.get("d")
            return not (
                isinstance(d, dict) and isinstance(d.get("session_id"), str) and d["session_id"]
            )
        return not (isinstance(t, str) and t)
    return False


# -- strategies --------------------------------------------------------------------------------

#: Text websockets can send (no lone surrogates: those cannot be encoded as UTF-8 at all).
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | TEXT,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
#: ``s`` values that must never move the host's sequence forward: negative, not integers,
#: or (resolved at send time) at or below the last ``s`` the server already sent.
STALE_S = "stale"
BAD_S = (
    st.integers(max_value=-1)
    | st.just(STALE_S)
    | st.sampled_from([None, True, False, 1.5, "7", [], {}, float("nan")])
)


@dataclass(frozen=True)
class Stale:
    """Placeholder for an ``s`` this far below the session's latest (resolved at send time)."""

    below: int


def _dump(msg: dict[str, Any]) -> str:
    return json.dumps(msg, allow_nan=True)


@st.composite
def dispatch_frames(draw: st.DrawFn) -> str | Stale | tuple[Stale, str]:
    """A dispatch with hostile fields; its ``s`` never runs ahead of the server's."""
    msg: dict[str, Any] = {"op": 0}
    if draw(st.booleans()):
        msg["t"] = draw(
            st.sampled_from(["", "READY", "RESUMED", "GROUP_AT_MESSAGE_CREATE"]) | JSON_VALUES
        )
    if draw(st.booleans()):
        msg["d"] = draw(JSON_VALUES)
    if draw(st.booleans()):
        msg["id"] = draw(JSON_VALUES)
    s = draw(BAD_S)
    if s == STALE_S:
        # Filled in at send time with a value at or below the server's latest s.
        return (Stale(draw(st.integers(0, 3))), _dump({**msg, "s": "__STALE__"}))
    msg["s"] = s
    return _dump(msg)


@st.composite
def wrong_type_frames(draw: st.DrawFn) -> str:
    """A known non-ending op (1, 10, 11) or an unknown one, with random JSON in every field."""
    op = draw(
        st.sampled_from([1, 10, 11])
        | st.integers(min_value=-(10**20), max_value=10**20)
        | JSON_VALUES
    )
    if op in (0, 7, 9):  # dispatches are dispatch_frames; 7 and 9 end the connection
        op = 11
    msg = {"op": op, "d": draw(JSON_VALUES)}
    for key in ("s", "t", "id"):
        if draw(st.booleans()):
            msg[key] = draw(JSON_VALUES)
    if op == 10 and draw(st.booleans()):
        msg["d"] = {"heartbeat_interval": draw(JSON_VALUES)}
    return _dump(msg)


@st.composite
def truncated(draw: st.DrawFn) -> str:
    """A valid frame cut short."""
    text = draw(
        st.sampled_from(
            [
                '{"op":11}',
                '{"op":0,"s":1,"t":"X","d":{"a":[1,2,3]}}',
                '{"op":10,"d":{"heartbeat_interval":300}}',
            ]
        )
    )
    return text[: draw(st.integers(0, len(text) - 1))]


@st.composite
def nested(draw: st.DrawFn) -> str:
    """Deeply nested JSON, bare or as a dispatch's ``d`` (deeper than json can parse, or not)."""
    # The decoder's nesting limit is the recursion limit minus the caller's stack, and
    # Hypothesis moves the limit while a test runs (up to ~3000): depths in between parse or
    # not depending on the moment. Either answer is fine, so none is generated. 32 000 keeps
    # the frame (two characters a level) under max_frame_bytes.
    depth = draw(
        st.integers(min_value=50, max_value=700) | st.integers(min_value=5_000, max_value=32_000)
    )
    inner = "[" * depth + "]" * depth
    if draw(st.booleans()):
        return inner
    return '{"op":0,"t":"NESTED","d":' + inner + "}"


@st.composite
def huge(draw: st.DrawFn) -> str:
    """Big but within max_frame_bytes: non-JSON, or a dispatch with a big ``d`` and no ``s``."""
    size = draw(st.integers(min_value=1_000, max_value=HOSTILE.max_frame_bytes - 200))
    if draw(st.booleans()):
        return "x" * size
    return _dump({"op": 0, "t": "HUGE", "d": "y" * size})


FRAMES = st.one_of(
    TEXT,
    st.binary(max_size=2_000),
    truncated(),
    nested(),
    huge(),
    dispatch_frames(),
    wrong_type_frames(),
    st.integers(-(10**6), 10**6)
    .filter(lambda op: op not in KNOWN_OPS)
    .map(lambda op: _dump({"op": op})),
    st.sampled_from(
        [
            "",
            " ",
            "null",
            "[]",
            "{}",
            '{"op":null}',
            '{"op":"1"}',
            '{"op":1e400}',
            "NaN",
            '{"op":0,"t":"READY","d":{"session_id":""}}',
        ]
    ),
)

#: Absurd Hello intervals (docs/behaviour.md §4): missing, not a finite number, below 100 ms or
#: above 10 minutes. The next socket's Hello carries one; the default is used, no churn.
ABSURD_INTERVALS = st.sampled_from(
    [
        0,
        -1,
        99,
        600_001,
        10**12,
        10**400,
        None,
        "300",
        True,
        [],
        {},
        MISSING,
        float("nan"),
        float("inf"),
        1e-9,
    ]
)

TERMINALS = st.one_of(
    st.none(),
    st.builds(lambda n: ("oversized", n), st.integers(1, 50_000)),
    st.just(("op7", None)),
    st.builds(lambda d: ("op9", d), JSON_VALUES),
    st.builds(lambda v: ("hello", v), ABSURD_INTERVALS),
)


# -- the environment -------------------------------------------------------------------------


class Env:
    """The shared gateway and manager, and what the host received. (A plain class: Hypothesis
    prints a dataclass argument field by field, and the host's data can nest 800 deep.)"""

    def __init__(
        self, gw: FakeGateway, mgr: ConnectionManager, task: asyncio.Task[None], got: list[Dispatch]
    ) -> None:
        self.gw, self.mgr, self.task, self.got = gw, mgr, task, got
        self.loop_errors: list[str] = []
        self.examples = 0
        self.frames = 0
        self.bad = 0
        self.reconnects = 0
        self.disturbed = 0  # examples whose socket ended unplanned (e.g. a false zombie)

    def __repr__(self) -> str:
        return f"<Env examples={self.examples} state={self.mgr.state.name}>"


async def _until(predicate: Any, timeout: float, what: str) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)
    del what


@pytest_asyncio.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    """One fake gateway and one running manager (with a state file), shared by all examples."""
    loop = asyncio.get_running_loop()
    async with FakeGateway(heartbeat_interval_ms=HB_MS, seed=3) as gw:
        got: list[Dispatch] = []
        mgr = manager_for(
            gw,
            policy=HOSTILE,
            on_dispatch=got.append,
            state_file=tmp_path / "state.json",
            rng=random.Random(5),
        )
        task = asyncio.create_task(mgr.run())
        e = Env(gw, mgr, task, got)
        previous = loop.get_exception_handler()
        loop.set_exception_handler(lambda _l, ctx: e.loop_errors.append(str(ctx.get("message"))))
        try:
            await _until(lambda: mgr.state is State.ALIVE, 10, "first ALIVE")
            yield e
        finally:
            loop.set_exception_handler(previous)
            async with asyncio.timeout(10):
                await mgr.stop()
                with contextlib.suppress(FatalError):
                    await task
        print(
            f"hostile frames: examples={e.examples} frames={e.frames} bad={e.bad} "
            f"reconnects={e.reconnects} connections={len(gw.connections)}"
        )


async def _resolve(env: Env, frame: Any) -> str | bytes:
    if isinstance(frame, tuple) and isinstance(frame[0], Stale):
        seq = max(env.gw.session_seq() - frame[0].below, 0)
        return frame[1].replace('"__STALE__"', str(seq))
    return frame


async def _send_batch(
    env: Env, frames: list[Any], terminal: tuple[str, Any] | None
) -> list[str | bytes]:
    sent: list[str | bytes] = []
    for frame in frames:
        raw = await _resolve(env, frame)
        await env.gw.send_raw(raw)
        sent.append(raw)
    if terminal is None:
        return sent
    kind, value = terminal
    if kind == "oversized":
        await env.gw.send_raw(
            _dump({"op": 0, "s": 10**9, "t": "BIG", "d": "z" * (HOSTILE.max_frame_bytes + value)})
        )
    elif kind == "op7":
        await env.gw.send_raw('{"op":7}')
    elif kind == "op9":
        await env.gw.send_raw(_dump({"op": 9, "d": value}))
    elif kind == "hello":
        env.gw.faults.hello_interval = value
        await env.gw.send_reconnect(close_after_s=0.2)
    return sent


# -- the property ----------------------------------------------------------------------------


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(frames=st.lists(FRAMES, min_size=1, max_size=6), terminal=TERMINALS)
async def test_hostile_frames_never_break_the_manager(
    env: Env, frames: list[Any], terminal: tuple[str, Any] | None
) -> None:
    """Hostile frames never crash, hang or spin the manager, and a later dispatch arrives once."""
    gw, mgr = env.gw, env.mgr
    await _until(
        lambda: mgr.state is State.ALIVE and len(gw.live_connections) == 1,
        15,
        "ALIVE before the batch",
    )
    env.examples += 1
    connections_before = len(gw.connections)
    attempt_before = mgr.machine.attempt
    with capture_logs() as logs:
        sent = await _send_batch(env, frames, terminal)
        if terminal is not None:
            # The batch ended the connection on purpose (op 9 may even end the session): the
            # marker goes to whatever session the manager holds once it is back.
            await _until(
                lambda: (
                    mgr.machine.attempt > attempt_before
                    and mgr.state is State.ALIVE
                    and len(gw.live_connections) == 1
                ),
                15,
                "back after the terminal frame",
            )
        marker = env.examples
        await gw.dispatch("MARKER", {"marker": marker})
        await _until(
            lambda: any(d.type == "MARKER" and d.data == {"marker": marker} for d in env.got),
            15,
            "the marker delivered",
        )
        await asyncio.sleep(0.05)
        gw.faults.hello_interval = NO_OVERRIDE
        # Never spins: once the marker is through, a quiet spell opens no socket at all.
        attempt, opened = mgr.machine.attempt, len(gw.connections)
        cpu = time.process_time()
        await asyncio.sleep(0.3)
        cpu = time.process_time() - cpu
        assert mgr.machine.attempt == attempt and len(gw.connections) == opened, "reconnect churn"
        assert cpu < 0.2, f"{cpu:.3f} s of CPU in a 0.3 s quiet spell"
    env.frames += len(sent)
    env.reconnects += len(gw.connections) - connections_before
    assert not env.task.done(), env.task
    assert mgr.state in ALIVE_ISH
    assert [d.data for d in env.got if d.type == "MARKER"].count({"marker": marker}) == 1
    bad_expected = [f for f in sent if expected_bad(f)]
    bad_logged = [e for e in logs if e["event"] == "qqconn.bad_frame"]
    env.bad += len(bad_logged)
    ended = [e for e in logs if e["event"] == "qqconn.connection_ended"]
    # With no terminal frame any ending is unplanned; with one, an ending of the client's own
    # watchdogs is (the terminal's own ending is a frame_too_large, op 7 or op 9 one).
    unplanned_end = any(terminal is None or e.get("kind") in OWN_WATCHDOG_KINDS for e in ended)
    if unplanned_end:
        # The socket the batch went to ended under us (a false zombie on a loaded machine):
        # frames still in flight on it are never read, legitimately. Everything else holds.
        # (A fresh-clone CI run under load logged 4 of 6 bad frames of a batch that had a
        # terminal frame; this branch then only counted batches without one.)
        env.disturbed += 1
        assert len(bad_logged) <= len(bad_expected), (bad_logged, bad_expected)
        assert env.disturbed <= max(3, env.examples // 4), "too many unplanned reconnects"
    else:
        # The endings go in the message: if this fails again, it says whether a socket ended.
        assert len(bad_logged) == len(bad_expected), (bad_logged, bad_expected, ended)
    assert all(len(e["error"]) <= MAX_ERROR_CHARS for e in bad_logged)
    for e in logs:
        assert e["event"] not in ("qqconn.internal_error", "qqconn.callback_failed"), e
        assert e.get("log_level") != "exception", e
    assert not env.loop_errors
    if terminal is not None and terminal[0] == "oversized":
        assert any(e["event"] == "qqconn.frame_too_large" for e in logs)
    if terminal is not None and terminal[0] == "hello":
        assert [e["event"] for e in logs].count("qqconn.hello_interval_replaced") == 1
        assert mgr.machine.heartbeat_interval_s == HOSTILE.default_heartbeat_interval_s


# -- the frame limit ---------------------------------------------------------------------------


def _frame_of_size(n: int) -> str:
    """A dispatch frame (no ``s``, so it is delivered whatever came before) of exactly n bytes."""
    head = '{"op":0,"t":"SIZED","d":"'
    tail = '"}'
    return head + "q" * (n - len(head) - len(tail)) + tail


async def test_max_frame_bytes_is_enforced_at_the_boundary(env: Env) -> None:
    """A frame of max_frame_bytes is read; one byte more closes 1009, logged, and resumes."""
    gw, mgr = env.gw, env.mgr
    limit = HOSTILE.max_frame_bytes
    with capture_logs() as logs:
        await gw.send_raw(_frame_of_size(limit))
        await _until(lambda: any(d.type == "SIZED" for d in env.got), 5, "the largest frame")
        assert len(gw.connections) == 1
        await gw.send_raw(_frame_of_size(limit + 1))
        await _until(lambda: gw.resumes == 1 and mgr.state is State.ALIVE, 10, "resumed")
    assert [d.type for d in env.got].count("SIZED") == 1
    assert gw.connections[0].close_code == 1009
    assert any(e["event"] == "qqconn.frame_too_large" and e["max_bytes"] == limit for e in logs)


# -- regressions of bugs the fuzzing found -----------------------------------------------------


async def test_unexpected_ready_is_neither_delivered_nor_adopted(env: Env, tmp_path: Path) -> None:
    """A READY while ALIVE reaches neither the host nor the resume checkpoint."""
    gw, mgr = env.gw, env.mgr
    live = mgr.machine.session_id
    await gw.dispatch("C2C_MESSAGE_CREATE", {"n": 1})
    await gw.send_raw(_dump({"op": 0, "s": 1, "t": "READY", "d": {"session_id": "not-a-session"}}))
    await gw.dispatch("C2C_MESSAGE_CREATE", {"n": 2})
    await _until(
        lambda: sum(d.type == "C2C_MESSAGE_CREATE" for d in env.got) == 2, 5, "both events"
    )
    assert mgr.machine.session_id == live
    assert [d.type for d in env.got].count("READY") == 1
    assert mgr.snapshot()["session_id"] == live
    assert json.loads((tmp_path / "state.json").read_text())["session_id"] == live
