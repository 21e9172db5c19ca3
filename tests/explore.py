"""Exhaustive breadth-first exploration of the connection machine's abstract state space.

TLC-style explicit-state checking in plain Python: the *real*
:class:`~qqconn.machine.ConnectionMachine` is driven, never a model of it.

The abstract state (:class:`Node`) is a hashable tuple of everything the guards and actions
read: the machine state, the counters, whether a session exists, the per-attempt flags, and
time, abstracted into two facts about the current attempt: ``young`` (its socket opened less
than ``quick_disconnect_threshold_s`` ago, so an ending now is a quick drop) and ``silent`` (no
inbound frame for ``stale_after_intervals`` heartbeat intervals, so a heartbeat due now finds
the connection stale). Concrete numbers that decide nothing (the attempt number, ``last_seq``,
the jitter) are left out.

Time is abstracted into event *variants*, each stamped with a concrete time chosen from the
machine's own ``now``, ``opened_at`` and ``last_frame_at`` (every variant moves time forward):

* ``now``: ``at = now + 1 ms``; a young connection stays young, a fresh one fresh.
* ``long`` (only while young): ``at = opened_at + 10 s``: the connection has lived long.
* ``stale`` (heartbeat timer only, while frames are fresh): ``at = last_frame_at + 3 intervals``.
* ``old-attempt``: the event names the previous attempt (a late event of a closed socket).

The alphabet is every event type of :mod:`qqconn.events`, one close code per row of
docs/behaviour.md's close-code table (None, 1000, 1006, 4009, 4006, 4902, 4004, 4008, 4914,
4001, 4924, 3000), an oversized frame (qqconn sent 1009), refused credentials, op 9 ``d``
true and false, every timer, start, stop, a dispatch and the host's report that it handled
one, all fed in every node. They fall in three kinds:

* *conforming*: what a driver keeping its contract can deliver there; the search goes on
  from where they lead;
* *closed-attempt*: events of an attempt that is not the current, open one (a late close of a
  socket already given up, or a socket event fed with the right attempt number after that
  attempt closed); they must be dropped: no commands, no trigger, nothing changed;
* *off-contract* (:func:`off_contract`): events of the current attempt that a driver keeping
  its contract never delivers (a frame before SocketOpened, SocketOpened twice...). They get
  every edge check, their targets the node checks, but the search stops there: what follows
  from a broken driver is not the machine's behaviour.

Expanding a node: instead of rebuilding a machine (about 1.5 ms each), one machine is reused:
its data attributes are restored from the node's snapshot before each event. A sample of nodes
is checked against a fresh machine that replays the node's shortest path
(:func:`check_replay`), which is what proves the restore faithful. Parent pointers give the
shortest event sequence to every node, printed with every violation.

What is checked is listed on :class:`Exploration`; ``tests/test_exploration.py`` asserts it and
``bench/machine.py`` reports the exploration's size and time.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from qqconn import commands as cmd
from qqconn import events as ev
from qqconn import machine as machine_module
from qqconn.errors import LocalProtocolError
from qqconn.events import Timer
from qqconn.machine import TRANSITIONS, TRIGGERS, ConnectionMachine, State
from qqconn.machine.fields import machine_fields
from qqconn.policy import Policy
from qqconn.testing.events import dispatch_received, ready_received

S = State

#: A small policy, so every limit is reached within a few steps.
POLICY = Policy(
    max_quick_disconnects=3,
    max_reconnect_attempts=4,
    max_resume_failures=2,
    max_heartbeat_send_failures=2,
    max_identify_refusals=2,
)

#: The Hello interval fed to the machine (ms); stale after ``stale_after_intervals`` of these.
HELLO_INTERVAL_MS = 1000
#: One close code per row of docs/behaviour.md's close-code table (None: no close frame).
CLOSE_CODES: tuple[int | None, ...] = (None, 1000, 1006, 4009, 4006, 4902, 4004, 4008, 4914,
                                       4001, 4924, 3000)  # fmt: skip
EPSILON_S = 0.001
LONG_LIFE_S = 10.0
SESSION_ID = "session-1"
TERMINAL = (S.FATAL, S.STOPPED)


class Quiet:
    """A logger that drops everything (the exploration logs nothing)."""

    def _drop(self, *_: Any, **__: Any) -> None:
        return None

    debug = info = warning = error = exception = critical = _drop


class Node(NamedTuple):
    """The abstract state: everything a guard or an action reads, time reduced to two facts."""

    state: State
    started: bool
    attempt_open: bool
    socket_opened: bool
    young: bool
    silent: bool
    session: bool
    sent_resume: bool
    reached_session: bool
    awaiting_ack: bool
    stall_excused: bool
    send_failures: int
    refresh_token: bool
    quick_drops: int
    failed_attempts: int
    resume_failures: int
    auth_failures: int
    identify_refusals: int
    oversized_here: bool  # the last oversized ending happened at the current point (rule 19)
    skipped_here: bool  # ...and the s at this point was skipped already
    fatal_retryable: bool | None


class Edge(NamedTuple):
    """The outcome of one event from one node."""

    child: Node
    commands: tuple[cmd.Command, ...]
    raised: str | None  # the exception type's name, if handle() raised
    kind: str  # "conforming", "closed-attempt" (must be dropped) or "off-contract"


@dataclass(frozen=True)
class RowKey:
    """One (row, source) of the table: a row's index in ``build_rows()``, and one source."""

    index: int
    source: str

    def describe(self, rows: list[dict[str, Any]]) -> str:
        row = rows[self.index]
        dest = row["dest"].name if isinstance(row["dest"], State) else row["dest"]
        parts = [f"{self.source} --{row['trigger']}--> {dest}"]
        if "conditions" in row:
            parts.append(f"[{row['conditions']}]")
        for key in ("before", "after"):
            if key in row:
                parts.append(f"{key}={row[key]}")
        return f"row {self.index}: " + " ".join(parts)


@dataclass
class Violation:
    """A property that failed, with the shortest event sequence that shows it."""

    message: str
    path: list[ev.Event]
    #: False for a liveness walk: the shortest path to its start, then the walk itself.
    shortest: bool = True

    def __str__(self) -> str:
        steps = "\n".join(f"    {i + 1:2d}. {describe_event(e)}" for i, e in enumerate(self.path))
        what = "shortest event sequence" if self.shortest else "event sequence"
        return f"{self.message}\n  {what} ({len(self.path)} events):\n{steps}"


@dataclass
class Exploration:
    """The explored graph and what it showed.

    Every edge is checked for: a terminal state never left, and nothing emitted there;
    NotifyFatal exactly on entering FATAL and never otherwise (so once on any path, never from
    STOPPED); Finish exactly on entering a terminal state; no trigger, queued ones included,
    that no row answered, and no engine exception; Started raising LocalProtocolError with the
    machine unchanged once started; StopRequested reaching STOPPED with the socket closed and
    every timer cancelled; events of a closed or other attempt dropped (no commands, no
    trigger, nothing changed but ``now``). Every node reached is checked for counters within
    their limits and for the states' own invariants (ALIVE only after READY/RESUMED on the
    socket, BACKOFF and the terminal states with no open attempt, QUICK_DROPPED never a resting
    state, a Fatal reason exactly in FATAL).

    Off-contract events (:func:`off_contract`) get the edge checks and their targets the node
    checks, but the search does not continue from those targets.
    """

    policy: Policy
    nodes: list[Node] = field(default_factory=list)
    index: dict[Node, int] = field(default_factory=dict)
    parent: list[tuple[int, ev.Event] | None] = field(default_factory=list)
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    edges: list[dict[str, Edge]] = field(default_factory=list)
    fired: Counter[RowKey] = field(default_factory=Counter)
    #: (reason, what it did) -> how often, for off-contract events
    off_contract: Counter[tuple[str, str]] = field(default_factory=Counter)
    violations: list[Violation] = field(default_factory=list)
    seconds: float = 0.0
    events_fired: int = 0

    @property
    def edge_count(self) -> int:
        """Edges between explored nodes (conforming events and dropped closed-attempt ones)."""
        return sum(1 for edges in self.edges for e in edges.values() if e.kind != "off-contract")

    @property
    def depth(self) -> int:
        """The longest shortest path: how many events the farthest node needs."""
        return max(len(self.path(i)) for i in range(len(self.nodes)))

    def child(self, here: int, label: str) -> int | None:
        """The node an explored (not off-contract) edge leads to."""
        edge = self.edges[here].get(label)
        if edge is None or edge.kind == "off-contract":
            return None
        return self.index[edge.child]

    def path(self, node: int) -> list[ev.Event]:
        """The shortest event sequence that reaches ``node`` from a new machine."""
        out: list[ev.Event] = []
        step = self.parent[node]
        while step is not None:
            node, event = step
            out.append(event)
            step = self.parent[node]
        return out[::-1]

    def violation(self, message: str, node: int, event: ev.Event | None = None) -> None:
        path = self.path(node) + ([event] if event is not None else [])
        self.violations.append(Violation(message, path))

    def summary(self) -> dict[str, Any]:
        """Size and time, for printing and for bench/machine.py."""
        return {
            "nodes": len(self.nodes),
            "edges": self.edge_count,
            "off_contract_edges": sum(self.off_contract.values()),
            "events_fired": self.events_fired,
            "depth": self.depth,
            "seconds": round(self.seconds, 3),
        }


def describe_event(event: ev.Event) -> str:
    """``SocketClosed(attempt=2, at=0.003, code=4009)``: short and replayable."""
    parts = []
    for name in event.__dataclass_fields__:
        value = getattr(event, name)
        if name in ("reason", "detail", "stage"):
            continue
        if isinstance(value, Timer):
            value = value.name
        elif isinstance(value, float):
            value = round(value, 6)
        parts.append(
            f"{name}={value!r}" if isinstance(value, str) and name != "timer" else f"{name}={value}"
        )
    return f"{type(event).__name__}({', '.join(parts)})"


# -- the machine under test -------------------------------------------------------------------


class Midpoint(random.Random):
    """A generator whose ``uniform`` is the middle of the range: jitter decides nothing the
    exploration looks at, and a stateless draw keeps snapshots exact."""

    def uniform(self, a: float, b: float) -> float:
        return (a + b) / 2


def new_machine(policy: Policy, engine: Any = None) -> ConnectionMachine:
    """A fresh machine with a stateless generator and a logger that drops everything, on the
    process's shared engine unless ``engine`` (one a :class:`Recorder` may hook)."""
    return ConnectionMachine(policy, rng=Midpoint(0), logger=Quiet(), engine=engine)


def _data_keys(machine: ConnectionMachine) -> tuple[str, ...]:
    skip = {"_machine", "_log", "_rng", "policy", "_out", "_queue"}
    fields = machine_fields(machine)
    return tuple(k for k, v in fields.items() if k not in skip and not callable(v))


def snapshot(machine: ConnectionMachine, keys: tuple[str, ...]) -> dict[str, Any]:
    """The machine's data (every attribute but the engine, the logger, the policy, the RNG)."""
    return {k: getattr(machine, k) for k in keys}


def restore(machine: ConnectionMachine, snap: dict[str, Any]) -> None:
    """Put the machine back into ``snap`` (its generator, :class:`Midpoint`, has no state)."""
    for k, v in snap.items():
        setattr(machine, k, v)
    machine._out = []


def abstract(machine: ConnectionMachine) -> Node:
    """The abstract state of a concrete machine (see the module docstring)."""
    m, p = machine, machine.policy
    opened = m.attempt_open and m.opened_at is not None
    young = (
        opened and m.opened_at is not None and m.now - m.opened_at < p.quick_disconnect_threshold_s
    )
    live = m.session_id is not None and m.state not in TERMINAL
    silent = False
    if m.attempt_open and m.heartbeat_interval_s is not None and m.last_frame_at is not None:
        silent = m.now - m.last_frame_at >= p.stale_after_intervals * m.heartbeat_interval_s
    return Node(
        state=m.state,
        started=m.attempt > 0 or m.state is S.AWAITING_PERMIT,
        attempt_open=m.attempt_open,
        socket_opened=opened,
        young=young,
        silent=silent,
        session=m.session_id is not None,
        sent_resume=m.sent_resume,
        reached_session=m.reached_session,
        awaiting_ack=m.awaiting_ack,
        # read only by heartbeat rows; begin_attempt resets it before a socket is up again
        stall_excused=m.stall_excused and m.state in (State.IDENTIFIED, State.ALIVE),
        send_failures=m.send_failures,
        refresh_token=m.refresh_token,
        quick_drops=m.quick_drops,
        failed_attempts=m.failed_attempts,
        resume_failures=m.resume_failures,
        auth_failures=m.auth_failures,
        identify_refusals=m.identify_refusals,
        # Rule 19's memory is read only by a connection_ended row: nothing in FATAL or STOPPED.
        oversized_here=live and m._oversized_at == (m.session_id, m.last_seq),
        skipped_here=live and m._skipped_at == (m.session_id, m.last_seq),
        fatal_retryable=None if m.fatal is None else m.fatal.retryable,
    )


def _margins_hold(machine: ConnectionMachine) -> str | None:
    """Two machines with one abstract state must behave alike: keep concrete times far from
    the thresholds, so the ``now`` variant cannot cross one by accident."""
    m, p = machine, machine.policy
    if m.attempt_open and m.opened_at is not None:
        lived = m.now - m.opened_at
        if p.quick_disconnect_threshold_s - 1.0 <= lived < p.quick_disconnect_threshold_s:
            return f"abstraction leak: lived {lived:.3f} s, too close to the quick threshold"
    if m.attempt_open and m.heartbeat_interval_s is not None and m.last_frame_at is not None:
        limit = p.stale_after_intervals * m.heartbeat_interval_s
        silence = m.now - m.last_frame_at
        if limit - 0.5 <= silence < limit:
            return f"abstraction leak: silent {silence:.3f} s, too close to the stale limit"
    return None


# -- the alphabet ---------------------------------------------------------------------------

Maker = Callable[[int, float], ev.Event]


def _base_alphabet() -> list[tuple[str, Maker | None]]:
    """(label, make(attempt, at)); a None maker marks the events without an attempt
    (Started, StopRequested, DispatchHandled)."""
    makers: list[tuple[str, Maker | None]] = [
        ("Started", None),
        ("StopRequested", None),
        ("DispatchHandled", None),
        ("IdentifyPermitted", None),
        ("IdentifyPermitDeferred", None),
        ("IdentifyPermitDeferred(unknown)", None),
        ("ConnectFailed", lambda a, t: ev.ConnectFailed(a, t, "token", "HTTP 503")),
        (
            "ConnectFailed(refused)",
            lambda a, t: ev.ConnectFailed(a, t, "token", "refused", refused=True),
        ),
        ("SocketOpened", lambda a, t: ev.SocketOpened(a, t)),
        ("Hello", lambda a, t: ev.HelloReceived(a, t, HELLO_INTERVAL_MS)),
        ("Ready", lambda a, t: ready_received(a, t, SESSION_ID, 1)),
        ("Resumed", lambda a, t: ev.ResumedReceived(a, t, None)),
        ("Dispatch", lambda a, t: dispatch_received(a, t, None)),
        ("HeartbeatAcked", lambda a, t: ev.HeartbeatAcked(a, t)),
        ("HeartbeatRequested", lambda a, t: ev.HeartbeatRequested(a, t)),
        ("HeartbeatSent", lambda a, t: ev.HeartbeatSent(a, t)),
        ("HeartbeatSendFailed", lambda a, t: ev.HeartbeatSendFailed(a, t, "broken pipe")),
        ("Reconnect(op7)", lambda a, t: ev.ReconnectRequested(a, t)),
        ("InvalidSession(true)", lambda a, t: ev.InvalidSessionReceived(a, t, True)),
        ("InvalidSession(false)", lambda a, t: ev.InvalidSessionReceived(a, t, False)),
        ("FrameRejected", lambda a, t: ev.FrameRejected(a, t, "not JSON")),
    ]
    for code in CLOSE_CODES:
        makers.append((f"SocketClosed({code})", _closer(code)))
    makers.append(("SocketClosed(sent 1009)", lambda a, t: ev.SocketClosed(a, t, None, "", 1009)))
    for timer in Timer:
        makers.append((f"TimerFired({timer.name})", _timer(timer)))
    for timer in (Timer.HEARTBEAT, Timer.ACK_DEADLINE):  # run late by a stalled loop (rule 21)
        makers.append((f"TimerFired({timer.name})@stalled", _late_timer(timer)))
    return makers


def _closer(code: int | None) -> Maker:
    return lambda a, t: ev.SocketClosed(a, t, code, "")


def _timer(timer: Timer) -> Maker:
    return lambda a, t: ev.TimerFired(timer, a, t)


def _late_timer(timer: Timer) -> Maker:
    return lambda a, t: ev.TimerFired(timer, a, t, late_s=1.0)


BASE_ALPHABET = _base_alphabet()
#: Labels whose old-attempt variant is fed too (a late event of a socket already given up).
OLD_ATTEMPT_LABELS = (
    "SocketClosed(None)",
    "SocketClosed(4009)",
    "Hello",
    "Ready",
    "TimerFired(HEARTBEAT)",
    "TimerFired(BACKOFF)",
    "Dispatch",
)


def alphabet(machine: ConnectionMachine) -> Iterator[tuple[str, ev.Event]]:
    """Every event of the alphabet, stamped for this concrete machine, with its label."""
    m, p = machine, machine.policy
    now = m.now + EPSILON_S
    young = (
        m.attempt_open
        and m.opened_at is not None
        and m.now - m.opened_at < p.quick_disconnect_threshold_s
    )
    socket_up = m.state in (State.IDENTIFIED, State.ALIVE)
    for label, make in BASE_ALPHABET:
        if label.endswith("@stalled") and not socket_up:
            continue  # only heartbeat rows read late_s, and only with a socket up
        if make is None:
            if label == "DispatchHandled":  # the host lane reports the READY it was handed
                yield label, ev.DispatchHandled(now, SESSION_ID, 1)
            elif label == "IdentifyPermitted":
                yield label, ev.IdentifyPermitted(now)
            elif label == "IdentifyPermitDeferred":
                yield label, ev.IdentifyPermitDeferred(now, 5.0, "bucket busy")
            elif label == "IdentifyPermitDeferred(unknown)":
                yield label, ev.IdentifyPermitDeferred(now, None, "store unreachable")
            else:
                yield label, (ev.Started(now) if label == "Started" else ev.StopRequested(now))
            continue
        yield label, make(m.attempt, now)
        if young:
            assert m.opened_at is not None
            yield f"{label}@long", make(m.attempt, max(now, m.opened_at + LONG_LIFE_S))
        if label in OLD_ATTEMPT_LABELS and m.attempt >= 1:
            yield f"{label}@old-attempt", make(m.attempt - 1, now)
    interval = m.heartbeat_interval_s
    if m.attempt_open and interval is not None and m.last_frame_at is not None:
        stale_at = m.last_frame_at + p.stale_after_intervals * interval + EPSILON_S
        if stale_at > now:
            yield "TimerFired(HEARTBEAT)@stale", ev.TimerFired(Timer.HEARTBEAT, m.attempt, stale_at)


def is_for_closed_attempt(machine: ConnectionMachine, event: ev.Event) -> bool:
    """Is this an event of an attempt other than the current, open one, which the machine must
    drop (events.py, commands.CloseSocket)? The BACKOFF timer is the exception: it outlives
    the socket it follows."""
    attempt = getattr(event, "attempt", None)
    if attempt is None:
        return False
    if attempt != machine.attempt:
        return True
    if isinstance(event, ev.TimerFired) and event.timer in (Timer.BACKOFF, Timer.PERMIT):
        return False
    return not machine.attempt_open


_FRAMES = (
    ev.HelloReceived,
    ev.ReadyReceived,
    ev.ResumedReceived,
    ev.DispatchReceived,
    ev.HeartbeatAcked,
    ev.HeartbeatRequested,
    ev.ReconnectRequested,
    ev.InvalidSessionReceived,
    ev.FrameRejected,
    ev.SocketClosed,
)


def off_contract(machine: ConnectionMachine, event: ev.Event) -> str | None:
    """Why a driver that keeps its contract (events.py, commands.py) could never deliver this
    event of the current, open attempt now; None if it could. Such events are fed anyway
    and checked, but the exploration does not continue from where they lead."""
    m = machine
    if getattr(event, "attempt", None) is None or is_for_closed_attempt(m, event):
        return None
    if not m.attempt_open:
        return None  # the BACKOFF timer, after the socket it follows has closed
    opened = m.opened_at is not None
    if isinstance(event, ev.SocketOpened) and opened:
        return "SocketOpened twice"
    if isinstance(event, ev.ConnectFailed) and opened:
        return "ConnectFailed after SocketOpened"
    if isinstance(event, _FRAMES) and not opened:
        return "a frame or close before SocketOpened"
    heartbeat_timer = isinstance(event, ev.TimerFired) and event.timer in (
        Timer.HEARTBEAT,
        Timer.ACK_DEADLINE,
    )
    heartbeat_report = isinstance(event, (ev.HeartbeatSent, ev.HeartbeatSendFailed))
    if (heartbeat_timer or heartbeat_report) and m.heartbeat_interval_s is None:
        return "a heartbeat timer or send report before Hello"
    if isinstance(event, ev.TimerFired) and event.timer in (Timer.BACKOFF, Timer.PERMIT):
        return f"the {event.timer.name} timer of an attempt already begun"
    deadline = isinstance(event, ev.TimerFired) and event.timer is Timer.ATTEMPT_DEADLINE
    if deadline and m.reached_session:
        return "the attempt deadline after READY/RESUMED cancelled it"
    return None


# -- recording which rows fire ------------------------------------------------------------------


class Recorder:
    """Hooks the machine's ``finalize_event``: records every trigger (queued ones too), which
    row of the table answered it, and any exception its callbacks raised."""

    def __init__(self, machine: ConnectionMachine, rows: list[dict[str, Any]]) -> None:
        self.row_of: dict[int, RowKey] = {}
        engine = machine._machine
        for trigger in TRIGGERS:
            event = engine.events[trigger]
            for state in State:
                listed = [
                    i
                    for i, row in enumerate(rows)
                    if row["trigger"] == trigger and state in _sources(row)
                ]
                transitions = event.transitions.get(state.name, [])
                if len(listed) != len(transitions):  # pragma: no cover - a transitions change
                    raise AssertionError(f"{trigger}/{state.name}: rows and transitions differ")
                for i, transition in zip(listed, transitions, strict=True):
                    self.row_of[id(transition)] = RowKey(i, state.name)
        self.calls: list[Call] = []
        engine.finalize_event.append(self._finalize)

    def _finalize(self, event_data: Any) -> None:
        # transitions sets event_data.transition to each row it tries; the one tried last
        # fired if result is set, or raised if error is set. Otherwise no row answered.
        answered = event_data.result or event_data.error is not None
        row = self.row_of.get(id(event_data.transition)) if answered else None
        source = row.source if row else event_data.state.name
        self.calls.append(Call(event_data.event.name, source, row, event_data.error))


class Call(NamedTuple):
    """One trigger the engine processed."""

    trigger: str
    source: str
    row: RowKey | None  # None: no row answered (a silent no-op)
    error: BaseException | None


def _sources(row: dict[str, Any]) -> list[State]:
    source = row["source"]
    return list(source) if isinstance(source, list) else [source]


# -- the breadth-first search -------------------------------------------------------------------


def explore(
    policy: Policy = POLICY, *, max_nodes: int = 100_000, stop_after: int | None = None
) -> Exploration:
    """Explore every abstract state reachable from a new machine; check edges and nodes.

    The table is read when the machine is built (``qqconn.machine.build_rows``), so a test
    may explore a changed table. ``stop_after``: give up once that many violations are found.
    """
    started = time.perf_counter()
    out = Exploration(policy)
    rows = machine_module.build_rows()
    machine = new_machine(
        policy, machine_module.build_engine(rows)
    )  # its own: the recorder hooks it
    keys = _data_keys(machine)
    recorder = Recorder(machine, rows)

    def add(node: Node, parent: tuple[int, ev.Event] | None) -> int:
        out.index[node] = len(out.nodes)
        out.nodes.append(node)
        out.snapshots.append(snapshot(machine, keys))
        out.parent.append(parent)
        out.edges.append({})
        here = len(out.nodes) - 1
        for problem in _node_problems(node, policy):
            out.violation(problem, here)
        leak = _margins_hold(machine)
        if leak:
            out.violation(leak, here)
        return here

    add(abstract(machine), None)
    queue = deque([0])
    while queue and (stop_after is None or len(out.violations) < stop_after):
        here = queue.popleft()
        before = out.snapshots[here]
        restore(machine, before)
        for label, event in list(alphabet(machine)):
            restore(machine, before)
            reason = off_contract(machine, event)
            kind = (
                "closed-attempt"
                if is_for_closed_attempt(machine, event)
                else "off-contract"
                if reason
                else "conforming"
            )
            recorder.calls.clear()
            raised: BaseException | None = None
            commands: list[cmd.Command] = []
            try:
                commands = machine.handle(event)
            except Exception as exc:
                raised = exc
            out.events_fired += 1
            node = abstract(machine)
            edge = Edge(node, tuple(commands), type(raised).__name__ if raised else None, kind)
            out.edges[here][label] = edge
            _check_edge(out, here, label, event, edge, raised, recorder.calls, machine, before)
            if kind == "off-contract":
                effect = (
                    f"{out.nodes[here].state.name} -> {node.state.name}"
                    if node.state is not out.nodes[here].state
                    else "commands only"
                    if commands
                    else "nothing"
                )
                out.off_contract[(reason or "", effect)] += 1
                for problem in _node_problems(node, policy, driver_kept_contract=False):
                    out.violation(f"after an off-contract event ({reason}): {problem}", here, event)
                continue
            for call in recorder.calls:
                if call.row is not None:
                    out.fired[call.row] += 1
            if node not in out.index:
                if len(out.nodes) >= max_nodes:
                    out.violation(
                        f"over {max_nodes} abstract states: a counter is unbounded?", here, event
                    )
                    out.seconds = time.perf_counter() - started
                    return out
                queue.append(add(node, (here, event)))
    out.seconds = time.perf_counter() - started
    return out


def _node_problems(n: Node, p: Policy, *, driver_kept_contract: bool = True) -> list[str]:
    """What is wrong with an abstract state (empty: nothing)."""
    problems = []
    limits = (
        ("quick_drops", n.quick_drops, p.max_quick_disconnects),
        ("failed_attempts", n.failed_attempts, p.max_reconnect_attempts),
        ("resume_failures", n.resume_failures, p.max_resume_failures),
        # The failure that reaches the limit ends the socket; a live one stays below it.
        (
            "send_failures",
            n.send_failures,
            p.max_heartbeat_send_failures - (1 if n.attempt_open else 0),
        ),
        ("auth_failures", n.auth_failures, 1),
        ("identify_refusals", n.identify_refusals, p.max_identify_refusals),
    )
    for name, value, limit in limits:
        if value > limit:
            problems.append(f"{name} = {value} exceeds its limit {limit} in {n.state.name}")
    if n.state is S.QUICK_DROPPED:
        problems.append("the machine rests in QUICK_DROPPED between events (assess not run)")
    if (n.state is S.FATAL) != (n.fatal_retryable is not None):
        problems.append(f"{n.state.name} with fatal reason {n.fatal_retryable}")
    if n.state in (S.BACKOFF, S.AWAITING_PERMIT, *TERMINAL) and n.attempt_open:
        problems.append(f"{n.state.name} with an attempt still open")
    if n.state is S.ALIVE and not n.reached_session:
        problems.append("ALIVE without READY/RESUMED on this socket")
    if (
        driver_kept_contract
        and n.state in (S.IDENTIFIED, S.ALIVE)
        and not (n.attempt_open and n.socket_opened)
    ):
        problems.append(f"{n.state.name} without an open socket")
    return problems


def _check_edge(
    out: Exploration,
    here: int,
    label: str,
    event: ev.Event,
    edge: Edge,
    raised: BaseException | None,
    calls: list[Call],
    machine: ConnectionMachine,
    before: dict[str, Any],
) -> None:
    src, dst = out.nodes[here], edge.child
    where = f"{src.state.name} --{label}-->"
    bookkeeping = ("now",)

    # Started: begins a new machine; raises LocalProtocolError, machine unchanged, otherwise.
    if isinstance(event, ev.Started) and (src.started or src.state in TERMINAL):
        if not isinstance(raised, LocalProtocolError):
            out.violation(
                f"{where} Started on a started machine did not raise "
                f"LocalProtocolError (raised {raised!r})",
                here,
                event,
            )
        elif _changed(before, machine, ignore=bookkeeping):
            out.violation(f"{where} the refused Started changed the machine", here, event)
        return
    if raised is not None:
        out.violation(f"{where} raised {raised!r}", here, event)
        return

    # Nothing acts on a terminal machine, and nothing is emitted there.
    if src.state in TERMINAL and (dst != src or edge.commands):
        out.violation(
            f"{where} left or acted in a terminal state: {dst.state.name}, "
            f"{[type(c).__name__ for c in edge.commands]}",
            here,
            event,
        )

    # NotifyFatal exactly on entering FATAL; Finish exactly on entering a terminal state.
    notify = sum(isinstance(c, cmd.NotifyFatal) for c in edge.commands)
    finish = sum(isinstance(c, cmd.Finish) for c in edge.commands)
    entering_fatal = src.state is not S.FATAL and dst.state is S.FATAL
    if notify != int(entering_fatal):
        out.violation(f"{where} {dst.state.name} emitted NotifyFatal {notify} times", here, event)
    entering_terminal = src.state not in TERMINAL and dst.state in TERMINAL
    if finish != int(entering_terminal):
        out.violation(f"{where} {dst.state.name} emitted Finish {finish} times", here, event)

    # Stop (docs/behaviour.md 14): from any live state to STOPPED, the socket closed, every timer
    # cancelled, no socket opened, no fatal notify.
    if isinstance(event, ev.StopRequested) and src.state not in TERMINAL:
        kinds = [type(c) for c in edge.commands]
        cancelled = {c.timer for c in edge.commands if isinstance(c, cmd.CancelTimer)}
        if (
            dst.state is not S.STOPPED
            or cmd.OpenSocket in kinds
            or set(Timer) - cancelled
            or (cmd.CloseSocket in kinds) != src.attempt_open
        ):
            out.violation(
                f"{where} stop did not stop cleanly: {dst.state.name}, "
                f"{[k.__name__ for k in kinds]}",
                here,
                event,
            )

    # Events of a closed or another attempt: dropped, no commands, nothing changed.
    if edge.kind == "closed-attempt" and (
        edge.commands or calls or _changed(before, machine, ignore=bookkeeping)
    ):
        out.violation(
            f"{where} an event of a closed or other attempt acted: "
            f"{[type(c).__name__ for c in edge.commands]}",
            here,
            event,
        )

    # The race of issue 9: a snapshot never names a session the machine no longer holds.
    named = machine.snapshot_fields()["session_id"]
    if named is not None and named != machine.session_id:
        out.violation(
            f"{where} the snapshot names session {named!r}, the machine holds "
            f"{machine.session_id!r}",
            here,
            event,
        )

    # No silent no-op: every trigger (queued ones too) was answered by a row.
    for call in calls:
        if call.row is None or call.error is not None:
            out.violation(
                f"{where} trigger {call.trigger} in {call.source} was answered by "
                f"no row (error: {call.error!r})",
                here,
                event,
            )


def _changed(before: dict[str, Any], machine: ConnectionMachine, ignore: tuple[str, ...]) -> bool:
    after = {k: getattr(machine, k) for k in before}
    after.update((k, before[k]) for k in ignore)
    return after != before


# -- static check of the table ------------------------------------------------------------------


def table_outcome_gaps(machine: ConnectionMachine | None = None) -> list[str]:
    """(state, trigger) pairs whose rows do not end in exactly one, last, unguarded row, read
    from the engine itself (``get_transitions``), in the order it tries them."""
    engine = machine._machine if machine is not None else machine_module.build_engine()
    gaps = []
    for state in State:
        for trigger in TRIGGERS:
            rows = engine.get_transitions(trigger=trigger, source=state.name)
            unguarded = [i for i, t in enumerate(rows) if not t.conditions]
            if not rows:
                gaps.append(f"{state.name}/{trigger}: no row at all")
            elif unguarded[-1:] != [len(rows) - 1]:
                gaps.append(f"{state.name}/{trigger}: the last row is guarded")
            elif len(unguarded) > 1:
                gaps.append(f"{state.name}/{trigger}: rows after an unguarded row never fire")
    return gaps


# -- coverage ---------------------------------------------------------------------------------

#: (row, source) pairs that cannot fire by construction, and why.
UNREACHABLE_SOURCES = {
    S.QUICK_DROPPED.name: "QUICK_DROPPED is left inside the handle() that entered it (assess is "
    "queued on entry), so only assess ever finds the machine there",
}


def declared_row_indexes() -> list[int]:
    """Indexes in ``build_rows()`` of the rows declared in TRANSITIONS (not generated), but
    the start row of a *restored* machine (it Resumes, so it opens its socket with no permit):
    the exploration starts from a fresh machine only; tests/test_permits.py fires that row."""
    return [
        i
        for i, row in enumerate(TRANSITIONS)
        if not (row["trigger"] == "start" and row["dest"] is None and "conditions" in row)
    ]


def dead_rows(out: Exploration) -> list[str]:
    """Declared rows that never fired anywhere, and declared (row, source) pairs that never
    fired and are not unreachable by construction."""
    rows = machine_module.build_rows()
    dead = []
    for i in declared_row_indexes():
        keys = [RowKey(i, s.name) for s in _sources(rows[i])]
        if not any(out.fired[k] for k in keys):
            dead.append(f"never fired: {keys[0].describe(rows)} (every source)")
            continue
        for key in keys:
            if not out.fired[key] and key.source not in UNREACHABLE_SOURCES:
                dead.append(f"never fired: {key.describe(rows)}")
    return dead


def unfired_generated_rows(out: Exploration) -> list[str]:
    """Generated ``ignore`` rows that never fired (information, not failure)."""
    rows = machine_module.build_rows()
    return [
        RowKey(i, s.name).describe(rows)
        for i in range(len(TRANSITIONS), len(rows))
        for s in _sources(rows[i])
        if not out.fired[RowKey(i, s.name)]
    ]


# -- liveness -------------------------------------------------------------------------------

Strategy = Callable[[Node], str]


def _start_or(then: Callable[[Node], str]) -> Strategy:
    """Start, grant every identify permit asked for, and otherwise follow ``then``."""

    def step(n: Node) -> str:
        if not n.started and n.state is not S.AWAITING_PERMIT:
            return "Started"
        if n.state is S.AWAITING_PERMIT:
            return "IdentifyPermitted"
        return then(n)

    return step


def _long(n: Node, label: str) -> str:
    return f"{label}@long" if n.young else label


def _fail(opened_step: Callable[[Node], str]) -> Strategy:
    """A hostile world: BACKOFF always elapses, a live socket always gets ``opened_step``."""

    def step(n: Node) -> str:
        if n.state is S.BACKOFF:
            return "TimerFired(BACKOFF)"
        if n.state is S.CONNECTING and not n.socket_opened:
            return "SocketOpened"
        return opened_step(n)

    return _start_or(step)


def _connect_fails(n: Node) -> str:
    if n.state is S.BACKOFF:
        return "TimerFired(BACKOFF)"
    if n.state is S.CONNECTING and not n.socket_opened:
        return "ConnectFailed"
    return "SocketClosed(None)"


def _then_in_identified(identified: Callable[[Node], str]) -> Callable[[Node], str]:
    def step(n: Node) -> str:
        if n.state is S.CONNECTING:
            return "Hello"
        if n.state is S.IDENTIFIED:
            return identified(n)
        return "SocketClosed(None)"  # ALIVE at the start: the connection drops

    return step


def _refused(n: Node) -> str:
    if n.state is S.BACKOFF:
        return "TimerFired(BACKOFF)"
    if n.state is S.CONNECTING and not n.socket_opened:
        return "ConnectFailed(refused)"
    return "SocketClosed(None)"


def _ready_or_resumed(n: Node) -> str:
    return "Resumed" if n.sent_resume else "Ready"


def _ready_then_close(n: Node) -> str:
    if n.state is S.CONNECTING:
        return "Hello"
    if n.state is S.IDENTIFIED:
        return _ready_or_resumed(n)
    return "SocketClosed(1000)"


def _zombie(n: Node) -> str:
    if n.state is S.CONNECTING:
        return "Hello"
    return "TimerFired(HEARTBEAT)"  # no ACK ever comes: the second one finds it a zombie


@dataclass(frozen=True)
class FailureMode:
    """A world that fails the same way forever; must end in FATAL within ``bound`` events."""

    name: str
    strategy: Strategy
    cycle: int  # events per failed connection
    limit: int  # connections that can fail before FATAL (from any reachable node)
    retryable: bool | None  # the FATAL's retryable flag (None: either, whichever limit is hit)

    @property
    def bound(self) -> int:
        # One start, one partial first cycle (the node may be anywhere in it), then `limit`
        # full cycles, each of which must move a counter towards its limit.
        # An Identify attempt waits for its permit first: one IdentifyPermitted per connection.
        return 1 + self.cycle + self.cycle * self.limit + 1 + self.limit


def failure_modes(policy: Policy) -> list[FailureMode]:
    """Repeated-failure worlds (docs/behaviour.md's scenario list) and the bound each must meet."""
    attempts, quick = policy.max_reconnect_attempts, policy.max_quick_disconnects
    return [
        FailureMode("token endpoint down", _start_or(_connect_fails), 2, attempts, True),
        FailureMode(
            "socket dies 1 ms after opening, no close frame",
            _fail(lambda n: "SocketClosed(None)"),
            3,
            quick,
            True,
        ),
        FailureMode(
            "socket closes with 1000 right after opening",
            _fail(lambda n: "SocketClosed(1000)"),
            3,
            quick,
            True,
        ),
        FailureMode(
            "READY, then close 1000 at once (the seed's loop)",
            _fail(_ready_then_close),
            5,
            quick,
            True,
        ),
        FailureMode(
            "Hello, then no READY in time",
            _fail(_then_in_identified(lambda n: _long(n, "TimerFired(ATTEMPT_DEADLINE)"))),
            4,
            attempts,
            True,
        ),
        FailureMode(
            "Hello, then op 9 d:false",
            _fail(_then_in_identified(lambda n: "InvalidSession(false)")),
            5,
            attempts,
            None,  # rule 18: refused Identifies end non-retryable, failed Resumes retryable
        ),
        FailureMode(
            "Hello, then op 7 before READY",
            _fail(_then_in_identified(lambda n: "Reconnect(op7)")),
            4,
            attempts,
            True,
        ),
        FailureMode(
            "zombie: Hello, heartbeats never acknowledged", _fail(_zombie), 5, attempts, True
        ),
        # Not retryable (a second 4004), or retryable if the attempt budget runs out first.
        FailureMode(
            "close 4004 after every open", _fail(lambda n: "SocketClosed(4004)"), 3, 2, None
        ),
        FailureMode(
            "the token endpoint refuses the credentials every time",
            _start_or(_refused),
            2,
            2,
            None,
        ),
    ]


def _walk(
    out: Exploration, start: int, strategy: Strategy, bound: int, goal: Callable[[Node], bool]
) -> tuple[list[int], list[str], str | None]:
    """Follow ``strategy`` through the explored graph from ``start`` for at most ``bound``
    events; return the nodes visited, the labels taken and an error (None: goal reached)."""
    here, seen = start, [start]
    labels: list[str] = []
    for _ in range(bound + 1):
        if goal(out.nodes[here]):
            return seen, labels, None
        if out.nodes[here].state in TERMINAL:
            return seen, labels, f"ended in {out.nodes[here].state.name}"
        label = strategy(out.nodes[here])
        there = out.child(here, label)
        if there is None:
            return seen, labels, f"no explored {label} edge from {out.nodes[here].state.name}"
        labels.append(label)
        here = there
        seen.append(here)
    return seen, labels, f"not reached within {bound} events"


def _walk_events(out: Exploration, start: int, labels: list[str]) -> list[ev.Event]:
    """The concrete events of a walk: the path to ``start``, then each label's event as the
    alphabet stamps it for the machine at that point."""
    events = out.path(start)
    machine = new_machine(out.policy)
    restore(machine, out.snapshots[start])
    for label in labels:
        event = dict(alphabet(machine))[label]
        events.append(event)
        with contextlib.suppress(LocalProtocolError):
            machine.handle(event)
    return events


def check_failure_liveness(out: Exploration) -> list[Violation]:
    """From every reachable non-terminal node, each failure mode reaches FATAL within its
    bound, with the expected ``retryable``."""
    found: list[Violation] = []
    for mode in failure_modes(out.policy):
        for i, node in enumerate(out.nodes):
            if node.state in TERMINAL:
                continue
            seen, labels, error = _walk(
                out, i, mode.strategy, mode.bound, lambda n: n.state is S.FATAL
            )
            retryable = out.nodes[seen[-1]].fatal_retryable
            if error is None and mode.retryable is not None and retryable is not mode.retryable:
                error = f"FATAL with retryable={retryable}"
            if error is not None:
                found.append(
                    Violation(
                        f"failure mode {mode.name!r} from {node.state.name}: {error} "
                        f"(bound {mode.bound}; took {' '.join(labels)})",
                        _walk_events(out, i, labels),
                        shortest=False,
                    )
                )
                break  # one counterexample per mode (the nearest node) is enough
    return found


def _succeed(n: Node) -> str:
    if not n.started:
        return "Started"
    if n.state is S.AWAITING_PERMIT:
        return "IdentifyPermitted"
    if n.state is S.BACKOFF:
        return "TimerFired(BACKOFF)"
    if n.state is S.CONNECTING:
        return "Hello" if n.socket_opened else "SocketOpened"
    return _ready_or_resumed(n)


#: BACKOFF elapses, the permit, the socket opens, Hello, READY/RESUMED: five events (six
#: unstarted).
SUCCESS_BOUND = 6


def forced_to_fatal(out: Exploration) -> set[int]:
    """Nodes *on a forced path to FATAL*: non-terminal nodes from which no ALIVE node can be
    reached in the explored graph by any events other than StopRequested."""
    reverse: list[list[int]] = [[] for _ in out.nodes]
    for i, edges in enumerate(out.edges):
        for label in edges:
            j = out.child(i, label)
            if j is not None and label != "StopRequested":
                reverse[j].append(i)
    can_live = {i for i, n in enumerate(out.nodes) if n.state is S.ALIVE}
    queue = deque(can_live)
    while queue:
        for j in reverse[queue.popleft()]:
            if j not in can_live:
                can_live.add(j)
                queue.append(j)
    return {i for i, n in enumerate(out.nodes) if n.state not in TERMINAL and i not in can_live}


def check_success_liveness(out: Exploration) -> list[Violation]:
    """From every reachable non-terminal node not forced to FATAL, the success path (BACKOFF
    elapses, socket opens, Hello, READY/RESUMED) reaches ALIVE within SUCCESS_BOUND events;
    from a forced node, every event sequence without StopRequested reaches FATAL (the forced
    nodes' state-changing edges form no cycle)."""
    found: list[Violation] = []
    forced = forced_to_fatal(out)
    for i, node in enumerate(out.nodes):
        if node.state in TERMINAL or i in forced:
            continue
        _seen, labels, error = _walk(out, i, _succeed, SUCCESS_BOUND, lambda n: n.state is S.ALIVE)
        if error is not None:
            found.append(
                Violation(
                    f"success path from {node.state.name}: {error} (took {' '.join(labels)})",
                    _walk_events(out, i, labels),
                    shortest=False,
                )
            )
            break
    # A forced node must not be able to stay away from FATAL forever.
    colour: dict[int, int] = {}

    def cyclic(i: int) -> bool:
        colour[i] = 1
        for label in out.edges[i]:
            j = out.child(i, label)
            if label == "StopRequested" or j is None or j == i or j not in forced:
                continue
            if colour.get(j) == 1 or (j not in colour and cyclic(j)):
                return True
        colour[i] = 2
        return False

    for i in sorted(forced):
        if i not in colour and cyclic(i):
            found.append(
                Violation("a node forced to FATAL can cycle without reaching it", out.path(i))
            )
            break
    return found


# -- replay -----------------------------------------------------------------------------------


def check_replay(out: Exploration, sample: int = 200, seed: int = 1) -> list[Violation]:
    """Replay the shortest path of a sample of nodes (always the deepest) on a fresh machine
    each: it must reach the node's snapshot exactly, which proves snapshot/restore faithful."""
    picks = random.Random(seed).sample(range(len(out.nodes)), min(sample, len(out.nodes)))
    picks.append(max(range(len(out.nodes)), key=lambda i: len(out.path(i))))
    found = []
    for i in picks:
        machine = new_machine(out.policy)
        keys = _data_keys(machine)
        for event in out.path(i):
            with contextlib.suppress(LocalProtocolError):
                machine.handle(event)
        if snapshot(machine, keys) != out.snapshots[i] or abstract(machine) != out.nodes[i]:
            found.append(
                Violation(
                    "replaying the shortest path on a fresh machine does not "
                    "reach the explored state",
                    out.path(i),
                )
            )
    return found


def check_abstraction(
    out: Exploration,
    walks: int = 300,
    length: int = 40,
    seed: int = 2,
    visited: set[int] | None = None,
) -> list[Violation]:
    """Random walks of contract-keeping events, each machine with its own concrete history and
    times: after every event, the abstract state must be the one the explored graph predicts
    from the node it was in. This is what makes the abstraction sound (two machines with one
    abstract state behave alike). Half the walks start from a new machine (no snapshot at
    all), half from a random node's snapshot, so that the walks spread over the whole graph.
    ``visited`` collects the nodes the walks went through."""
    rng = random.Random(seed)
    found: list[Violation] = []
    live = [i for i, n in enumerate(out.nodes) if n.state not in TERMINAL]
    reused = new_machine(out.policy)
    for walk in range(walks):
        if walk % 2 == 0:
            machine, here = new_machine(out.policy), 0
        else:
            machine, here = reused, rng.choice(live)
            restore(machine, out.snapshots[here])
        path = out.path(here)
        for _ in range(length):
            if out.nodes[here].state in TERMINAL:
                break
            choices = [
                (label, e)
                for label, e in alphabet(machine)
                if off_contract(machine, e) is None
                and not isinstance(e, ev.StopRequested)  # walks are long enough to matter
                and (not isinstance(e, ev.Started) or not out.nodes[here].started)
            ]
            # Mostly moves that go somewhere and stay live, so walks get deep.
            onward = [
                (label, e)
                for label, e in choices
                if (j := out.child(here, label)) is not None
                and j != here
                and out.nodes[j].state not in TERMINAL
            ]
            label, event = rng.choice(onward if onward and rng.random() < 0.9 else choices)
            path.append(event)
            with contextlib.suppress(LocalProtocolError):
                machine.handle(event)
            predicted = out.child(here, label)
            actual = out.index.get(abstract(machine))
            if predicted is None or actual != predicted:
                found.append(
                    Violation(
                        f"abstraction unsound: after {label} the graph predicts "
                        f"{None if predicted is None else out.nodes[predicted]}, the machine is in "
                        f"{abstract(machine)}",
                        path,
                        shortest=False,
                    )
                )
                return found
            here = actual
            if visited is not None:
                visited.add(here)
    return found
