"""pytest plugin: the ``fake_gateway`` fixture (registered as the ``qqconn`` pytest11 entry point).

Importing this module is cheap on purpose: pytest loads it in every run of any project that has
qqconn installed. The gateway itself (websockets, h11) is imported only when the fixture runs,
and the fixture exists only when pytest-asyncio is installed.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qqconn.testing.gateway import FakeGateway

__all__: list[str] = []

#: Heartbeat interval the fixture's gateway announces in Hello (small, so tests run fast).
FIXTURE_HEARTBEAT_INTERVAL_MS = 500

if importlib.util.find_spec("pytest_asyncio") is not None:
    import pytest_asyncio

    @pytest_asyncio.fixture
    async def fake_gateway() -> AsyncIterator[FakeGateway]:
        """A started :class:`~qqconn.testing.FakeGateway` (Hello interval 500 ms), closed after."""
        from qqconn.testing.gateway import FakeGateway

        async with FakeGateway(heartbeat_interval_ms=FIXTURE_HEARTBEAT_INTERVAL_MS) as gw:
            yield gw

    __all__ += ["fake_gateway"]
