"""Runs a LiveStream: steps it when it is due or woken, and performs what it decides.

One asyncio task per stream. A recorded stream is due at each frame time; a match in play is
woken by whoever appends its frames or changes its state (``wake()``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from server.streams.live import LiveStream
from server.transport import perform


class LiveDriver:
    def __init__(self, stream: LiveStream, clock: Callable[[], float]) -> None:
        self.stream = stream
        self.clock = clock
        self._wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None  # set by whoever starts run()

    def wake(self) -> None:
        """Step soon: new frames, a new subscriber, or a state change."""
        self._wake.set()

    async def run(self) -> None:
        """Step until cancelled."""
        stream = self.stream
        while True:
            self._wake.clear()
            now = self.clock()
            perform(stream.step(now))
            wake_at = stream.next_wake(now)
            if wake_at is None:
                await self._wake.wait()
                continue
            delay = max(0.0, wake_at - self.clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
