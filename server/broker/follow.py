"""A replica's reading loop over one stream: what every server replica runs per live stream,
written once so resets, gaps and outages are handled the same way everywhere."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass

from .base import Broker, BrokerUnavailable, ReadResult


@dataclass(frozen=True)
class Update:
    """One change seen by ``follow``: ``result`` is None while the broker is unreachable
    (``healthy`` False: tell subscribers the stream is stalled)."""

    result: ReadResult | None
    healthy: bool


async def follow(
    broker: Broker,
    stream: str,
    after_seq: int = -1,
    epoch: str | None = None,
    block_s: float = 1.0,
    retry_max_s: float = 2.0,
) -> AsyncIterator[Update]:
    """Read ``stream`` from ``after_seq`` for ever, yielding only what changed: frames (with
    ``lost`` when some never came), a reset to a new epoch, a new state, the stream appearing
    or disappearing, the broker going down or coming back. After a reset the position is the
    new epoch's; the caller never has to track anything but what it is given."""
    healthy, state, current, seen = True, None, epoch, epoch
    delay = 0.05
    while True:
        try:
            result = await broker.read(stream, after_seq, current, block_s)
        except BrokerUnavailable:
            if healthy:
                healthy = False
                yield Update(None, False)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, retry_max_s)
            continue
        delay = 0.05
        changed = not healthy or result.frames or result.reset or result.lost
        changed = changed or result.state != state or result.epoch != seen
        healthy, state, seen = True, result.state, result.epoch
        if result.reset:
            after_seq = -1
        if result.epoch is not None:
            current = result.epoch  # kept while the stream is gone: it may come back as it was
        if result.frames:
            after_seq = result.frames[-1][0]
        if changed:
            yield Update(result, True)
