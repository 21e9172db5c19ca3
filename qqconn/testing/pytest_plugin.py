"""pytest plugin: the ``fake_gateway`` fixture (registered as the ``qqconn`` pytest11 entry point).

Importing this module is cheap on purpose: pytest loads it in every run of any project that has
qqconn installed. The gateway itself (websockets, h11) is imported only when the fixture runs,
and the fixture exists only when pytest-asyncio is installed.

The fixture's gateway accepts ``fake_gateway.app_id`` / ``fake_gateway.client_secret``
(:data:`~qqconn.testing.DEFAULT_APP_ID` / :data:`~qqconn.testing.DEFAULT_CLIENT_SECRET`) and
offers ``fake_gateway.fast_policy`` (:func:`qqconn.testing.fast_policy`) to hand to the manager
under test.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

# Cheap: the defaults module needs only qqconn.policy (no asyncio, websockets or h11).
from qqconn.testing.defaults import FIXTURE_HEARTBEAT_INTERVAL_MS

if TYPE_CHECKING:
    from qqconn.testing.gateway import FakeGateway

__all__: list[str] = []

if importlib.util.find_spec("pytest_asyncio") is not None:
    import pytest_asyncio

    @pytest_asyncio.fixture
    async def fake_gateway() -> AsyncIterator[FakeGateway]:
        """A started :class:`~qqconn.testing.FakeGateway` (Hello interval 500 ms), closed after.

        Its ``client_secret`` and ``fast_policy`` are what the manager under test needs.
        """
        from qqconn.testing.gateway import FakeGateway

        async with FakeGateway(heartbeat_interval_ms=FIXTURE_HEARTBEAT_INTERVAL_MS) as gw:
            yield gw

    __all__ += ["fake_gateway"]
