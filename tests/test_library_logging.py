"""Library logging (qqconn/_log.py): without a structlog configuration qqconn's events reach the
host's standard ``logging`` handlers under the ``qqconn`` hierarchy, and nothing reaches stdout;
with one, structlog's configuration rules."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog
from structlog.testing import capture_logs

from qqconn import State
from qqconn._log import get_logger
from tests.driver_support import running


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def unconfigured_structlog() -> Iterator[None]:
    """structlog as a host that never touched it leaves it; restored afterwards."""
    previous = structlog.get_config()
    was_configured = structlog.is_configured()
    structlog.reset_defaults()
    try:
        yield
    finally:
        structlog.configure(**previous)
        if not was_configured:
            structlog.reset_defaults()


@pytest.fixture
def host_handler() -> Iterator[_Records]:
    """A stdlib handler on the root logger, as a host that only uses ``logging`` has."""
    handler = _Records()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


@pytest.mark.usefixtures("unconfigured_structlog")
async def test_stdlib_host_gets_the_lines_and_stdout_stays_empty(
    host_handler: _Records, capsys: pytest.CaptureFixture[str]
) -> None:
    """A host with only a stdlib handler receives qqconn's events (name, keys); stdout is empty."""
    async with running() as r:
        await r.until_state(State.ALIVE)
        await r.gw.drop()
        await r.until(lambda: len(r.gw.connections) >= 2 and r.mgr.state is State.ALIVE)
    assert capsys.readouterr().out == ""
    ours = [rec for rec in host_handler.records if rec.name.startswith("qqconn")]
    transitions = [rec for rec in ours if getattr(rec, "event", None) == "qqconn.transition"]
    assert transitions, [rec.getMessage() for rec in ours]
    first = transitions[0]
    assert first.name == "qqconn"
    assert first.getMessage().startswith("qqconn.transition ")
    fields = first.qqconn  # type: ignore[attr-defined]
    assert {"from", "to", "trigger", "app_id", "shard"} <= set(fields)
    assert f"to={fields['to']}" in first.getMessage()
    assert "s3cret" not in "".join(rec.getMessage() for rec in ours)


@pytest.mark.usefixtures("unconfigured_structlog")
def test_configuring_later_switches_backend_and_exceptions_carry_exc_info(
    host_handler: _Records,
) -> None:
    """The backend is chosen at log time: structlog once the host configures it; the stdlib's
    records carry the exception of ``log.exception``."""
    log = get_logger("qqconn.driver").bind(app_id="1")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("qqconn.callback_failed", callback="on_dispatch")
    (record,) = [r for r in host_handler.records if r.name == "qqconn.driver"]
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert record.getMessage() == "qqconn.callback_failed app_id=1 callback=on_dispatch"
    with capture_logs() as captured:  # configures structlog
        log.info("qqconn.later", k=2)
    assert captured == [{"event": "qqconn.later", "app_id": "1", "k": 2, "log_level": "info"}]
    assert not [r for r in host_handler.records if getattr(r, "event", None) == "qqconn.later"]


@pytest.mark.usefixtures("unconfigured_structlog")
def test_raising_stdlib_handler_never_raises_into_qqconn() -> None:
    """A host handler that raises is swallowed (the QuietLogger guarantee holds on the stdlib)."""

    class Broken(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            raise OSError("disk full")

        def handleError(self, record: logging.LogRecord) -> None:
            raise OSError("still full")

    broken = Broken()
    logger = logging.getLogger("qqconn")
    logger.addHandler(broken)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        get_logger("qqconn").warning("qqconn.anything", x=1)  # must not raise
    finally:
        logger.removeHandler(broken)
        logger.setLevel(old)
    assert broken not in logger.handlers
