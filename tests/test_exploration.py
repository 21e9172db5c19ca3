"""Exhaustive exploration of the connection machine's abstract states.

The engine is ``tests/explore.py``; one exploration runs per module and every test below asks
it one question. Run with ``-s`` to see the size and the time. A failure prints the shortest
event sequence that shows it.
"""

from __future__ import annotations

from collections import Counter

import pytest

from qqconn import commands as cmd
from qqconn import events as ev
from qqconn.errors import LocalProtocolError
from qqconn.machine import TRANSITIONS, TRIGGERS, ConnectionMachine, State
from qqconn.machine import table as machine_table
from qqconn.policy import Policy
from tests import explore as x

S = State

#: Sanity floors: an exploration smaller than this has lost most of the machine.
MIN_NODES = 2_000
MIN_EDGES = 80_000
MIN_DEPTH = 12

#: A smaller policy for the mutants, so each explores in a second or two.
TINY = Policy(
    max_quick_disconnects=2,
    max_reconnect_attempts=2,
    max_resume_failures=1,
    max_heartbeat_send_failures=1,
)


def _report(violations: list[x.Violation], limit: int = 5) -> str:
    shown = "\n\n".join(str(v) for v in violations[:limit])
    more = f"\n\n... and {len(violations) - limit} more" if len(violations) > limit else ""
    return f"{len(violations)} violation(s):\n\n{shown}{more}"


@pytest.fixture(scope="module")
def exploration() -> x.Exploration:
    """The exploration of the real machine under the small policy, run once for the module."""
    out = x.explore()
    size = out.summary()
    states = Counter(n.state.name for n in out.nodes)
    print(
        f"\nexploration: {size['nodes']} abstract states, {size['edges']} edges "
        f"(+{size['off_contract_edges']} off-contract), {size['events_fired']} events fired, "
        f"depth {size['depth']}, {size['seconds']:.2f} s; by state: {dict(sorted(states.items()))}"
    )
    return out


# -- size -------------------------------------------------------------------------------------


def test_exploration_is_not_vacuous(exploration: x.Exploration) -> None:
    """The exploration reaches thousands of states and every resting state (its speed is a
    benchmark figure, docs/benchmarks.md item 6, never a timed assertion here)."""
    assert len(exploration.nodes) >= MIN_NODES, exploration.summary()
    assert exploration.edge_count >= MIN_EDGES, exploration.summary()
    assert exploration.depth >= MIN_DEPTH, exploration.summary()
    resting = {n.state for n in exploration.nodes}
    assert resting == set(State) - {S.QUICK_DROPPED}
    kinds = Counter(e.kind for edges in exploration.edges for e in edges.values())
    assert kinds["conforming"] and kinds["closed-attempt"] and kinds["off-contract"]


# -- safety -----------------------------------------------------------------------------------


def test_no_violation_on_any_edge_or_node(exploration: x.Exploration) -> None:
    """No edge or node check fails anywhere (see :class:`explore.Exploration` for the list)."""
    assert not exploration.violations, _report(exploration.violations)


def test_terminal_states_absorb_every_event(exploration: x.Exploration) -> None:
    """No event leaves FATAL or STOPPED, and none makes the machine emit anything there."""
    terminal = [i for i, n in enumerate(exploration.nodes) if n.state in x.TERMINAL]
    assert terminal
    for i in terminal:
        for label, edge in exploration.edges[i].items():
            assert edge.child == exploration.nodes[i], (label, exploration.path(i))
            assert edge.commands == (), (label, edge.commands, exploration.path(i))


def test_notify_fatal_once_on_entering_fatal_and_never_otherwise(
    exploration: x.Exploration,
) -> None:
    """NotifyFatal is emitted exactly on the edges into FATAL, once each; STOPPED never notifies."""
    into_fatal = other = 0
    for i, edges in enumerate(exploration.edges):
        for edge in edges.values():
            notify = sum(isinstance(c, cmd.NotifyFatal) for c in edge.commands)
            if exploration.nodes[i].state is not S.FATAL and edge.child.state is S.FATAL:
                into_fatal += 1
                assert notify == 1, (exploration.path(i), edge)
            else:
                other += 1
                assert notify == 0, (exploration.path(i), edge)
    assert into_fatal > 100 and other > 0


def test_counters_never_exceed_their_limits(exploration: x.Exploration) -> None:
    """quick_drops, failed_attempts and resume_failures stay within the policy, and reach it."""
    p = exploration.policy
    for name, limit in (
        ("quick_drops", p.max_quick_disconnects),
        ("failed_attempts", p.max_reconnect_attempts),
        ("resume_failures", p.max_resume_failures - 1),  # at the limit the session is forgotten
    ):
        highest = max(getattr(n, name) for n in exploration.nodes)
        assert highest == limit, f"{name}: highest {highest}, limit {limit}"


def test_every_state_and_trigger_has_an_outcome() -> None:
    """For every (state, trigger) the engine's rows end in exactly one unguarded row."""
    assert x.table_outcome_gaps() == []
    engine = x.new_machine(x.POLICY)._machine
    assert set(engine.events) == set(TRIGGERS)  # no trigger outside TRIGGERS, none missing


def test_started_twice_raises_and_changes_nothing(exploration: x.Exploration) -> None:
    """Started on a started (or terminal) machine raises LocalProtocolError, state unchanged."""
    refused = 0
    for i, node in enumerate(exploration.nodes):
        edge = exploration.edges[i]["Started"]
        if node.started or node.state in x.TERMINAL:
            assert edge.raised == "LocalProtocolError", exploration.path(i)
            assert edge.child == node
            refused += 1
        else:
            assert edge.raised is None and edge.child.started
    assert refused == len(exploration.nodes) - 1  # all but the new machine
    machine = x.new_machine(x.POLICY)
    machine.handle(ev.Started(0.0))
    with pytest.raises(LocalProtocolError):
        machine.handle(ev.Started(1.0))
    assert machine.state is S.AWAITING_PERMIT and machine.attempt == 0
    machine.handle(ev.IdentifyPermitted(1.5))
    with pytest.raises(LocalProtocolError):
        machine.handle(ev.Started(2.0))
    assert machine.state is S.CONNECTING and machine.attempt == 1


def test_events_of_closed_attempts_are_dropped(exploration: x.Exploration) -> None:
    """Every event of a closed or other attempt leaves the machine as it was, with no command."""
    dropped = 0
    for i, edges in enumerate(exploration.edges):
        for label, edge in edges.items():
            if edge.kind == "closed-attempt":
                dropped += 1
                assert edge.child == exploration.nodes[i] and not edge.commands, (
                    label,
                    exploration.path(i),
                )
    assert dropped > 1_000


def test_off_contract_events_are_survived(exploration: x.Exploration) -> None:
    """Events a broken driver might send (a frame before SocketOpened...) break no invariant."""
    reasons = {reason for reason, _ in exploration.off_contract}
    assert "a frame or close before SocketOpened" in reasons
    assert "SocketOpened twice" in reasons
    print("\noff-contract events (reason, effect): count")
    for (reason, effect), count in sorted(exploration.off_contract.items()):
        print(f"  {reason}: {effect}: {count}")


# -- liveness ---------------------------------------------------------------------------------


def test_repeated_failure_always_reaches_fatal_within_the_bound(
    exploration: x.Exploration,
) -> None:
    """From every live node, a world that fails the same way forever gets FATAL, and soon."""
    modes = x.failure_modes(exploration.policy)
    assert len(modes) >= 8
    found = x.check_failure_liveness(exploration)
    assert not found, _report(found)


def test_success_path_reaches_alive_from_every_live_node(exploration: x.Exploration) -> None:
    """From every live node not forced to FATAL, BACKOFF elapsing, open, Hello, READY gets
    ALIVE within five events; forced nodes (none today) cannot cycle short of FATAL."""
    found = x.check_success_liveness(exploration)
    assert not found, _report(found)
    forced = x.forced_to_fatal(exploration)
    print(f"\nnodes on a forced path to FATAL: {len(forced)}")
    assert not forced, _report(
        [x.Violation("forced to FATAL", exploration.path(i)) for i in sorted(forced)]
    )


# -- coverage ---------------------------------------------------------------------------------


def test_every_declared_row_fires(exploration: x.Exploration) -> None:
    """Every row of TRANSITIONS fires somewhere, from each of its sources that can be reached."""
    dead = x.dead_rows(exploration)
    assert not dead, "dead rows:\n  " + "\n  ".join(dead)
    declared = set(x.declared_row_indexes())
    assert declared == {k.index for k in exploration.fired if k.index < len(TRANSITIONS)}
    unfired = x.unfired_generated_rows(exploration)
    print(f"\ngenerated ignore rows never fired (unreachable pairs): {len(unfired)}")


# -- the checker itself -----------------------------------------------------------------------


def test_abstraction_is_sound(exploration: x.Exploration) -> None:
    """Fresh machines on random walks land where the graph predicts (same abstract state,
    same behaviour, whatever the concrete history)."""
    visited: set[int] = set()
    found = x.check_abstraction(exploration, visited=visited)
    assert not found, _report(found)
    print(f"\nabstraction walks went through {len(visited)} of {len(exploration.nodes)} nodes")
    assert len(visited) >= 300


def test_restoring_a_snapshot_equals_replaying_the_path(exploration: x.Exploration) -> None:
    """A fresh machine fed a node's shortest path reaches exactly the node's snapshot."""
    found = x.check_replay(exploration)
    assert not found, _report(found)


def test_checker_finds_a_reset_on_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    """A mutant that resets quick_drops on READY loops forever; the liveness check says so."""
    original = ConnectionMachine._session_reached

    def resets_quick_drops_too(self: ConnectionMachine) -> None:
        original(self)
        self.quick_drops = 0

    monkeypatch.setattr(ConnectionMachine, "_session_reached", resets_quick_drops_too)
    out = x.explore(TINY)
    assert not out.violations, _report(out.violations)  # no safety check can see this bug
    found = x.check_failure_liveness(out)
    assert any("seed's loop" in v.message for v in found), _report(found)
    loop = next(v for v in found if "seed's loop" in v.message)
    assert "not reached within" in loop.message
    closes = [e for e in loop.path if type(e).__name__ == "SocketClosed"]
    assert len(closes) > TINY.max_quick_disconnects  # the printed sequence shows the loop


def test_checker_finds_a_silent_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the generated catch-all rows, some trigger is answered by no row: found, with
    its shortest event sequence, and the static check names the gaps."""
    monkeypatch.setattr(machine_table, "_has_catch_all", lambda *_: True)
    assert x.table_outcome_gaps()  # a fresh engine reads the changed table
    out = x.explore(TINY)
    no_row = [v for v in out.violations if "answered by no row" in v.message]
    assert no_row, _report(out.violations)
    assert len(no_row[0].path) <= 5, str(no_row[0])


def test_checker_finds_a_second_notify(monkeypatch: pytest.MonkeyPatch) -> None:
    """A mutant that notifies twice on FATAL is caught on the shortest way into FATAL."""
    original = ConnectionMachine.give_up

    def notifies_twice(self: ConnectionMachine, event: object) -> None:
        original(self, event)
        self._out.append(cmd.NotifyFatal("again", None, True))

    monkeypatch.setattr(ConnectionMachine, "give_up", notifies_twice)
    out = x.explore(TINY, stop_after=1)
    assert out.violations and "NotifyFatal 2 times" in out.violations[0].message
    assert len(out.violations[0].path) <= 4, str(out.violations[0])
