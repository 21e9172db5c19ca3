"""The webhook transport over real loopback HTTP: uvicorn serving, the fake platform posting."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
from structlog.testing import capture_logs

from qqconn.errors import ConfigError, FatalError
from qqconn.machine import State
from qqconn.protocol import Dispatch
from qqconn.testing.platform import FakePlatform
from qqconn.webhook.asgi import WebhookApp
from qqconn.webhook.core import RefusalKind, signing_seed
from qqconn.webhook.receiver import WebhookReceiver, transport

APP_ID = "102030405"
SECRET = "W3bh00kS3cr3tN0b0dyM4yS33"  # 25 characters: the seed repeats it
PATH = "/qq/callback"


@contextlib.asynccontextmanager
async def serving(
    on_dispatch: Callable[[Dispatch], Any] | None = None, **kwargs: Any
) -> AsyncIterator[tuple[WebhookReceiver, str, list[Dispatch]]]:
    """Run a receiver on a free loopback port; yield it, its URL and what it delivered."""
    got: list[Dispatch] = []
    alive = asyncio.Event()

    def on_state(change: Any) -> None:
        if change.state is State.ALIVE:
            alive.set()

    rx = WebhookReceiver(
        app_id=APP_ID,
        client_secret=SECRET,
        on_dispatch=on_dispatch if on_dispatch is not None else got.append,
        on_state_change=on_state,
        host="127.0.0.1",
        port=0,
        path=PATH,
        **kwargs,
    )
    task = asyncio.create_task(rx.run())
    waiter = asyncio.create_task(alive.wait())
    done, _ = await asyncio.wait({task, waiter}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
    assert waiter in done, (
        f"the receiver did not start: {task.exception() if task.done() else 'timeout'}"
    )
    try:
        yield rx, f"http://127.0.0.1:{rx.bound_port}{PATH}", got
    finally:
        await rx.stop()
        await asyncio.wait_for(task, 15)
        assert rx.state is State.STOPPED


def platform(url: str, **kwargs: Any) -> FakePlatform:
    return FakePlatform(url, app_id=APP_ID, client_secret=SECRET, **kwargs)


async def test_validation_is_answered_with_a_signature_an_independent_verifier_accepts() -> None:
    """op 13 → {plain_token, signature}; libsodium (PyNaCl), from the seed derived in this test, verifies it."""
    seed = SECRET.encode()
    while len(seed) < 32:
        seed += seed
    verify_key = nacl.signing.SigningKey(seed[:32]).verify_key
    async with serving() as (rx, url, got), platform(url) as qq:
        result = await qq.validate(plain_token="Arq0D5A61EgUu4OxUvOp", event_ts="1725442341")
        assert result.status == 200 and result.plain_token == "Arq0D5A61EgUu4OxUvOp"
        assert result.signature is not None
        verify_key.verify(b"1725442341Arq0D5A61EgUu4OxUvOp", bytes.fromhex(result.signature))
        assert result.signature_valid
        assert got == [] and rx.snapshot()["validations"] == 1


async def test_a_thousand_events_are_delivered_once_each_with_retries_mixed_in() -> None:
    """1,000 signed events, 100 of them retried after a lost ack and 50 replayed: each delivered once."""
    async with serving() as (rx, url, got), platform(url, max_attempts=3) as qq:
        deliveries = []
        for batch in range(50):  # 50 batches of 20 concurrent deliveries
            qq.lose_acks = 2  # the first two acks of each batch "never arrive": retried
            deliveries += await asyncio.gather(
                *(qq.deliver(d={"n": batch * 20 + i}) for i in range(20))
            )
        replays = await asyncio.gather(*(qq.replay(d) for d in deliveries[::20]))
        assert all(d.acked for d in deliveries)
        assert all(r.status == 200 and json.loads(r.body) == {"op": 12, "d": 0} for r in replays)
        retried = sum(len(d.attempts) - 1 for d in deliveries)
        assert retried == 100
        ids = [d.event_id for d in got]
        assert len(ids) == 1000 and set(ids) == {d.event_id for d in deliveries}
        assert sorted(x.data["n"] for x in got) == list(range(1000))
        snap = rx.snapshot()
        assert snap["events_delivered"] == 1000 and snap["events_duplicate"] == 150
        assert snap["refused_total"] == 0 and snap["last_event_at_unix"] is not None


async def test_a_retry_during_a_slow_callback_waits_and_is_not_delivered_twice() -> None:
    """The platform times out while the callback runs and retries: the retry waits; one delivery."""
    got: list[Dispatch] = []

    async def slow(d: Dispatch) -> None:
        await asyncio.sleep(0.6)
        got.append(d)

    async with serving(slow) as (rx, url, _), platform(url, timeout_s=0.25, max_attempts=8) as qq:
        delivery = await qq.deliver(event_id="slow-1")
        assert delivery.acked and len(delivery.attempts) >= 2
        assert delivery.attempts[0].status is None  # the first attempt timed out
        await asyncio.sleep(0.7)  # let any waiting request finish
        assert [d.event_id for d in got] == ["slow-1"]
        assert rx.snapshot()["events_delivered"] == 1


async def test_every_forged_or_malformed_request_is_refused_and_not_delivered() -> None:
    """The refusal matrix: each kind of bad request gets its status and delivers nothing."""
    async with serving(max_body_bytes=64 * 1024) as (rx, url, got), platform(url) as qq:
        matrix = {
            RefusalKind.UNSIGNED: [await qq.send_unsigned(), await qq.send_unsigned(op=13)],
            RefusalKind.SIGNATURE_INVALID: [await qq.send_forged(), await qq.send_altered()],
            RefusalKind.SIGNATURE_MALFORMED: [await qq.send_bad_signature_encoding()],
            RefusalKind.APP_ID_FOREIGN: [await qq.send_foreign_app()],
            RefusalKind.APP_ID_MISSING: [await qq.send_without_app_id()],
            RefusalKind.TOO_LARGE: [await qq.send_oversized(64 * 1024 + 1)],
            RefusalKind.NOT_JSON: [await qq.send_signed(b'{"op":0,"id"', "cut_json")],
            RefusalKind.BAD_PAYLOAD: [await qq.send_signed(b'{"op":0,"id":"x","d":{}}', "no_t")],
            RefusalKind.UNKNOWN_OP: [await qq.send_signed(b'{"op":7}', "op7")],
            RefusalKind.WRONG_METHOD: [await qq.send_wrong_method()],
            RefusalKind.WRONG_PATH: [await qq.send_to("/elsewhere")],
        }
        for kind, sent in matrix.items():
            for s in sent:
                assert s.status == kind.status, (kind, s)
                if kind is not RefusalKind.WRONG_METHOD:
                    assert json.loads(s.body) == {"error": kind.value}
        await qq.send_incomplete()
        snap: dict[str, Any] = {}
        for _ in range(100):  # the server notices the vanished sender shortly
            snap = rx.snapshot()
            if snap["refused"]["body_incomplete"]:
                break
            await asyncio.sleep(0.02)
        assert snap["refused"]["body_incomplete"] == 1
        for kind, sent in matrix.items():
            assert snap["refused"][kind.value] == len(sent), kind
        assert got == [] and snap["events_delivered"] == 0
        # And after all that, a good event still goes through.
        assert (await qq.deliver()).acked and len(got) == 1


async def test_the_secret_is_in_no_log_line() -> None:
    """Validation, events, refusals and a failing callback log plenty, and never the secret or its seed."""

    def boom(d: Dispatch) -> None:
        raise RuntimeError(f"host bug on {d.event_id}")

    secret_forms = [SECRET, signing_seed(SECRET).decode(), signing_seed(SECRET).hex()]
    with capture_logs() as logs:
        async with serving(boom) as (rx, url, _), platform(url) as qq:
            await qq.validate()
            await qq.deliver()
            await qq.send_forged()
            await qq.send_unsigned()
            await qq.send_foreign_app()
            await qq.send_signed(b"nope", "not_json")
            assert rx.snapshot()["callback_failures"] == 1
            snapshot_text = json.dumps(rx.snapshot()) + repr(rx) + repr(rx.asgi)
    text = "\n".join(repr(entry) for entry in logs) + snapshot_text
    events = {entry["event"] for entry in logs}
    assert {
        "qqconn.webhook.refused",
        "qqconn.webhook.callback_failed",
        "qqconn.webhook.validated",
    } <= events
    assert all(e.startswith("qqconn.webhook.") for e in events)
    for form in secret_forms:
        assert form not in text


async def test_a_raising_callback_is_logged_acknowledged_and_not_replayed() -> None:
    """A callback that raises still counts as delivered: the retry is acknowledged, not redelivered."""
    calls: list[str] = []

    def flaky(d: Dispatch) -> None:
        calls.append(d.event_id or "")
        raise ValueError("no")

    async with serving(flaky) as (_rx, url, _), platform(url, lose_acks=1) as qq:
        delivery = await qq.deliver(event_id="e-1")
        assert delivery.acked and len(delivery.attempts) == 2
        assert calls == ["e-1"]


async def test_dedupe_survives_a_restart_with_a_store(tmp_path: Path) -> None:
    """Events delivered before a restart, sent again after it, are acknowledged and not delivered."""
    store = tmp_path / "dedupe.jsonl"
    async with serving(dedupe_store=store) as (_, url, got), platform(url) as qq:
        deliveries = [await qq.deliver() for _ in range(50)]
        assert len(got) == 50
    async with serving(dedupe_store=store) as (rx, url, got), platform(url) as qq:
        assert rx.snapshot()["dedupe_ids"] == 50
        replays = await asyncio.gather(*(qq.replay(d) for d in deliveries))
        assert all(r.status == 200 for r in replays)
        assert got == []
        assert (await qq.deliver()).acked and len(got) == 1
    async with serving() as (_, url, got), platform(url) as qq:  # without the store: no memory
        await qq.replay(deliveries[0])
        assert len(got) == 1


async def test_async_callbacks_run_one_at_a_time_in_arrival_order() -> None:
    """Coroutine callbacks are awaited; concurrent deliveries never overlap inside the callback."""
    active = 0
    most = 0
    seen: list[int] = []

    async def handler(d: Dispatch) -> None:
        nonlocal active, most
        active += 1
        most = max(most, active)
        await asyncio.sleep(0.005)
        seen.append(d.data["n"])
        active -= 1

    async with serving(handler) as (_, url, _got), platform(url) as qq:
        results = await asyncio.gather(*(qq.deliver(d={"n": i}) for i in range(30)))
        assert all(r.acked for r in results)
    assert most == 1 and sorted(seen) == list(range(30))


async def test_a_taken_port_is_a_retryable_fatal() -> None:
    """Listening on a port already in use: run() raises FatalError, state FATAL, on_fatal told once."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    fatals: list[FatalError] = []
    try:
        rx = WebhookReceiver(
            app_id=APP_ID,
            client_secret=SECRET,
            host="127.0.0.1",
            port=holder.getsockname()[1],
            on_fatal=fatals.append,
        )
        with pytest.raises(FatalError) as info:
            await asyncio.wait_for(rx.run(), 10)
    finally:
        holder.close()
    assert info.value.retryable and "cannot listen" in info.value.reason
    assert rx.state is State.FATAL and rx.snapshot()["fatal"]["retryable"] is True
    assert len(fatals) == 1


async def test_the_app_mounts_under_a_plain_asgi_router() -> None:
    """WebhookApp with path=None serves below whatever prefix a router mounts it at."""
    got: list[Dispatch] = []
    app = WebhookApp(app_id=APP_ID, client_secret=SECRET, on_dispatch=got.append)

    async def router(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/bots/qq"):
            await app({**scope, "root_path": "/bots/qq"}, receive, send)
            return
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(router, lifespan="off", log_config=None, access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(200):
            if server.started:
                break
            await asyncio.sleep(0.01)
        async with platform(f"http://127.0.0.1:{sock.getsockname()[1]}/bots/qq/events") as qq:
            assert (await qq.deliver(t="AT_MESSAGE_CREATE")).acked
            assert (await qq.validate()).signature_valid
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()
    assert [d.type for d in got] == ["AT_MESSAGE_CREATE"]


def test_transport_chooses_by_configuration() -> None:
    """One configuration, switched by its "transport" key alone, builds either; both have the host API."""
    handler = print
    config = {
        "app_id": APP_ID,
        "client_secret": SECRET,
        "intents": "GUILDS|PUBLIC_GUILD_MESSAGES",  # websocket only
        "shard": [0, 1],
        "port": 8443,  # webhook only
        "path": "/qq",
    }
    ws = transport(config, on_dispatch=handler)
    wh = transport({**config, "transport": "webhook"}, on_dispatch=handler)
    assert type(ws).__name__ == "ConnectionManager" and isinstance(wh, WebhookReceiver)
    assert ws.intents == 1 | 1 << 30 and wh.port == 8443 and wh.path == "/qq"  # type: ignore[union-attr]
    for t in (ws, wh):
        assert callable(t.run) and callable(t.stop) and t.state is State.CONNECTING
        assert t.snapshot()["state"] == "connecting"
    assert wh.snapshot()["transport"] == "webhook"
    for bad in (
        {"transport": "carrier-pigeon", "app_id": APP_ID, "client_secret": SECRET},
        {"transport": "webhook", "app_id": APP_ID, "client_secret": SECRET, "colour": "red"},
        {"app_id": APP_ID, "client_secret": SECRET, "intents": "NOT_AN_INTENT"},
        {"transport": "webhook", "app_id": APP_ID, "client_secret": SECRET, "port": 70000},
    ):
        with pytest.raises(ConfigError):
            transport(bad)


async def test_stop_before_run_and_twice_is_harmless() -> None:
    """stop() before run() makes run() return at once; a second stop() is a no-op."""
    rx = WebhookReceiver(app_id=APP_ID, client_secret=SECRET, port=0)
    await rx.stop()
    await asyncio.wait_for(rx.run(), 5)
    await rx.stop()
    assert rx.state is State.STOPPED and rx.bound_port is None


async def test_a_callback_that_awaits_stop_does_not_deadlock() -> None:
    """on_dispatch awaiting receiver.stop(): the event is acknowledged and run() returns promptly."""
    holder: list[WebhookReceiver] = []
    got: list[str] = []

    async def stop_on_first(d: Dispatch) -> None:
        got.append(d.event_id or "")
        await asyncio.wait_for(holder[0].stop(), 2)  # must not wait for the server

    rx = WebhookReceiver(
        app_id=APP_ID, client_secret=SECRET, port=0, path=PATH, on_dispatch=stop_on_first
    )
    holder.append(rx)
    task = asyncio.create_task(rx.run())
    for _ in range(500):
        if rx.state is State.ALIVE:
            break
        await asyncio.sleep(0.01)
    async with platform(f"http://127.0.0.1:{rx.bound_port}{PATH}", max_attempts=1) as qq:
        delivery = await qq.deliver(event_id="last-one")
    await asyncio.wait_for(task, 10)
    assert delivery.acked and got == ["last-one"] and rx.state is State.STOPPED


async def test_unusable_tls_files_and_unknown_hosts_are_permanent_fatals(tmp_path: Path) -> None:
    """A certificate that is not one, or a host name that does not resolve: FATAL, not retryable."""
    garbage = tmp_path / "cert.pem"
    garbage.write_text("not a certificate\n")
    for kwargs in (
        {"certfile": garbage, "keyfile": garbage},
        {"host": "no-such-host.invalid"},
    ):
        rx = WebhookReceiver(app_id=APP_ID, client_secret=SECRET, port=0, **kwargs)  # type: ignore[arg-type]
        with pytest.raises(FatalError) as info:
            await asyncio.wait_for(rx.run(), 20)
        assert not info.value.retryable and rx.state is State.FATAL, kwargs
        assert SECRET not in info.value.reason
