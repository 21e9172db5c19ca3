"""How fast is the webhook transport? Signed events/s to the callback, and µs per verification.

Two measurements:

* **throughput**: a :class:`~qqconn.WebhookReceiver` (uvicorn, this process) on a loopback
  port; a client in a *separate process* posts ``EVENTS`` pre-signed op 0 events over
  ``CONNECTIONS`` keep-alive HTTP/1.1 connections (a minimal client on asyncio streams, so the
  figure is the server's, not httpx's). Reported: events/s from the first request to the last
  acknowledgement, and that the callback saw each event exactly once.
* **verification cost**: µs per event of :meth:`RequestVerifier.check` (headers, Ed25519
  verification over timestamp + body, JSON parse into a ``Dispatch``), of the Ed25519
  verification alone, and, beside them, the WebSocket path for the same event as it stands
  in the driver: :func:`qqconn.protocol.parse_frame` then
  :meth:`ConnectionMachine.handle_dispatch` (the machine's dispatch row) on a live machine. The difference is the price of
  the signature.

Run ``python bench/webhook.py`` (``--events N``, ``--json FILE``); :func:`measure` and
:func:`markdown` are for ``bench/run.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from qqconn.protocol import Dispatch, parse_frame  # noqa: E402
from qqconn.testing.events import ready_received  # noqa: E402

APP_ID = "102030405"
SECRET = "BenchSecretBenchSecret12"
EVENTS = 5_000
CONNECTIONS = 16
VERIFY_EVENTS = 5_000
REPEATS = 7


def _event(i: int) -> bytes:
    doc = {
        "op": 0,
        "id": f"GROUP_AT_MESSAGE_CREATE:bench-{i:08d}",
        "s": i + 1,
        "t": "GROUP_AT_MESSAGE_CREATE",
        "d": {
            "id": f"ROBOT1.0_{i:012d}",
            "content": f" hello number {i}",
            "timestamp": "2026-12-02T03:00:00+08:00",
            "author": {"id": "E4F4AEA33253A2797FB897C50B81D7ED", "member_openid": "E4F4AEA3"},
            "group_id": "C9F778FE6ADF9D1D1DBE395BF744A33A",
        },
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def _signed(i: int, key: Any) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    body = _event(i)
    ts = b"1764644400"
    sig = key.sign(ts + body).hex().encode()
    headers = [
        (b"x-bot-appid", APP_ID.encode()),
        (b"x-signature-ed25519", sig),
        (b"x-signature-timestamp", ts),
        (b"content-length", str(len(body)).encode()),
    ]
    return body, headers


# -- the client (a separate process) --------------------------------------------------------------


async def _client(port: int, path: str, events: int, connections: int) -> dict[str, Any]:
    from qqconn.webhook.core import SigningKey

    key = SigningKey(SECRET)
    requests = []
    for i in range(events):
        body, headers = _signed(i, key)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        )
        head += "".join(f"{k.decode()}: {v.decode()}\r\n" for k, v in headers)
        requests.append(head.encode() + b"\r\n" + body)
    queue = list(reversed(requests))
    statuses: dict[int, int] = {}

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while queue:
                writer.write(queue.pop())
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    return {"elapsed_s": elapsed, "statuses": statuses}


# -- the server (this process) --------------------------------------------------------------------


async def _throughput(events: int, connections: int) -> dict[str, Any]:
    from qqconn.machine import State
    from qqconn.webhook.receiver import WebhookReceiver

    seen: set[str] = set()
    duplicates = 0

    def on_dispatch(d: Dispatch) -> None:
        nonlocal duplicates
        if d.event_id in seen:
            duplicates += 1
        seen.add(d.event_id or "")

    alive = asyncio.Event()
    rx = WebhookReceiver(
        app_id=APP_ID,
        client_secret=SECRET,
        on_dispatch=on_dispatch,
        port=0,
        path="/qq",
        on_state_change=lambda c: alive.set() if c.state is State.ALIVE else None,
    )
    task = asyncio.create_task(rx.run())
    await asyncio.wait_for(alive.wait(), 15)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--client",
        str(rx.bound_port),
        "--events",
        str(events),
        "--connections",
        str(connections),
        stdout=asyncio.subprocess.PIPE,
        env=env,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 600)
    await rx.stop()
    await task
    result = json.loads(out)
    snap = rx.snapshot()
    return {
        "events": events,
        "connections": connections,
        "elapsed_s": round(result["elapsed_s"], 3),
        "events_per_s": round(events / result["elapsed_s"]),
        "statuses": result["statuses"],
        "delivered": snap["events_delivered"],
        "delivered_once_each": len(seen) == events and duplicates == 0,
        "refused": snap["refused_total"],
    }


# -- verification cost ----------------------------------------------------------------------------


def _interleaved_us(runs: dict[str, Any], n: int) -> dict[str, dict[str, float]]:
    """µs per event for each workload: median, min and max of REPEATS rounds, the workloads
    taking turns within each round so that a noisy neighbour costs them alike."""
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(REPEATS):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            samples[name].append((time.perf_counter() - started) / n * 1e6)
    return {
        name: {
            "median_us": round(statistics.median(xs), 2),
            "min_us": round(min(xs), 2),
            "max_us": round(max(xs), 2),
        }
        for name, xs in samples.items()
    }


def _verification(n: int) -> dict[str, Any]:
    from qqconn import events as ev
    from qqconn.machine import ConnectionMachine
    from qqconn.policy import Policy
    from qqconn.webhook.core import Event, RequestVerifier, SigningKey

    key = SigningKey(SECRET)
    verifier = RequestVerifier(app_id=APP_ID, client_secret=SECRET, path="/qq")
    signed = [_signed(i, key) for i in range(n)]
    messages = [(h[1][1], h[2][1] + b) for b, h in signed]
    sigs = [bytes.fromhex(s.decode()) for s, _ in messages]
    frames = [b.decode() for b, _ in signed]

    def webhook() -> None:
        check = verifier.check
        for body, headers in signed:
            verdict = check("POST", "/qq", headers, body)
        assert isinstance(verdict, Event)

    def signature_only() -> None:
        verify = key.verify
        for sig, (_, message) in zip(sigs, messages, strict=True):
            ok = verify(sig, message)
        assert ok

    def websocket() -> None:
        machine = ConnectionMachine(Policy(), logger=_Quiet())
        for event in (
            ev.Started(0.0),
            ev.SocketOpened(1, 0.1),
            ev.HelloReceived(1, 0.2, 41_250),
            ready_received(1, 0.3, "session", 0),
        ):
            machine.handle(event)
        accept = machine.handle_dispatch
        for frame in frames:
            parsed = parse_frame(frame)
            accept(1, 1.0, parsed)  # type: ignore[arg-type]

    figures = _interleaved_us(
        {
            "webhook_check_us": webhook,
            "ed25519_verify_us": signature_only,
            "websocket_parse_accept_us": websocket,
        },
        n,
    )
    return {"events": n, **figures, "body_bytes": len(signed[0][0])}


class _Quiet:
    """A logger that drops everything (the machine's cost, not the logging setup's)."""

    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: self if name == "bind" else None


def measure(events: int = EVENTS, connections: int = CONNECTIONS) -> dict[str, Any]:
    """Both measurements, with the versions they ran on."""
    import cryptography
    import uvicorn

    return {
        "python": platform.python_version(),
        "cryptography": cryptography.__version__,
        "uvicorn": uvicorn.__version__,
        "cpus": os.cpu_count(),
        "throughput": asyncio.run(_throughput(events, connections)),
        "verification": _verification(VERIFY_EVENTS),
    }


def markdown(result: dict[str, Any]) -> str:
    t, v = result["throughput"], result["verification"]
    return "\n".join(
        [
            "### Webhook transport",
            "",
            f"Python {result['python']}, cryptography {result['cryptography']}, uvicorn "
            f"{result['uvicorn']}, {result['cpus']} CPUs (shared).",
            "",
            "| measure | value |",
            "| --- | --- |",
            f"| signed events/s to the callback ({t['events']} events, {t['connections']} "
            f"keep-alive connections, client in another process) | {t['events_per_s']} |",
            f"| delivered once each | {'yes' if t['delivered_once_each'] else 'NO'} ({t['delivered']}) |",
            f"| webhook verdict per event (headers + Ed25519 + JSON), µs | {v['webhook_check_us']['median_us']} |",
            f"| of which Ed25519 verification, µs | {v['ed25519_verify_us']['median_us']} |",
            f"| WebSocket path per event (parse_frame + handle_dispatch), µs | {v['websocket_parse_accept_us']['median_us']} |",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=EVENTS)
    parser.add_argument("--connections", type=int, default=CONNECTIONS)
    parser.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    parser.add_argument("--client", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client is not None:
        result = asyncio.run(_client(args.client, "/qq", args.events, args.connections))
        print(json.dumps(result))
        return 0
    import logging

    import structlog

    # The figures are the transport's; info lines on stdout would only get in the report's way.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    result = measure(args.events, args.connections)
    print(markdown(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["throughput"]["delivered_once_each"] else 1


if __name__ == "__main__":
    sys.exit(main())
