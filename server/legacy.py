"""``/demodata``: the old Tornado server's protocol, fed from the same live stream.

One JSON text message per tick, bursts of 16 ticks, the next burst when the client sends
``{"request": "more ticks"}``, and ``EOF`` at the end. A client is never more than
``MAX_AHEAD_S`` ahead of the shared playhead (an early request waits), and one that falls
more than a second behind jumps to the live edge, since this protocol cannot say "skipped".
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections import OrderedDict

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from server.metrics import Metrics
from server.streams.live import LiveStream

BURST = 16
MAX_AHEAD_S = 10.0
MORE_TICKS = {"request": "more ticks"}


class LegacyEncoder:
    """JSON text of each frame, made once per stream and shared by every legacy client."""

    def __init__(self, stream: LiveStream) -> None:
        self.stream = stream
        self._cache: OrderedDict[int, str] = OrderedDict()

    def text(self, seq: int) -> str:
        text = self._cache.get(seq)
        if text is None:
            timeline = self.stream.timeline
            text = json.dumps(timeline.recording.frame(timeline.index(seq)), separators=(",", ":"))
            self._cache[seq] = text
            if len(self._cache) > 4 * 64 * 10:
                self._cache.popitem(last=False)
        return text


_encoders: weakref.WeakKeyDictionary[LiveStream, LegacyEncoder] = weakref.WeakKeyDictionary()


async def serve_legacy(connection: ServerConnection, stream: LiveStream, metrics: Metrics) -> None:
    encoder = _encoders.get(stream) or _encoders.setdefault(stream, LegacyEncoder(stream))
    timeline = stream.timeline
    requested = asyncio.Event()
    requested.set()  # the first burst goes out unasked, as the old server did
    reader = asyncio.create_task(_read_requests(connection, requested, metrics))
    next_seq = timeline.playhead(stream.clock())
    max_ahead = int(MAX_AHEAD_S * timeline.rate)
    try:
        while True:
            await requested.wait()
            if reader.done():  # the client left (the reader sets the event on its way out)
                break
            playhead = timeline.playhead(stream.clock())
            if playhead - next_seq > timeline.rate:
                next_seq = playhead
            if next_seq + BURST > playhead + max_ahead:
                await asyncio.sleep((next_seq + BURST - playhead - max_ahead) / timeline.rate)
                continue
            requested.clear()
            stop = next_seq + BURST
            end = timeline.end()
            if end is not None:
                stop = min(stop, end)
            for seq in range(next_seq, stop):
                text = encoder.text(seq)
                await connection.send(text)
                metrics.sent("demodata", 1, len(text))
            next_seq = stop
            if end is not None and next_seq >= end:
                await connection.send("EOF")
                break
    except ConnectionClosed:
        pass
    finally:
        reader.cancel()


async def _read_requests(
    connection: ServerConnection, requested: asyncio.Event, metrics: Metrics
) -> None:
    try:
        async for message in connection:
            try:
                request = json.loads(message)
            except (ValueError, TypeError):
                request = None
            if request == MORE_TICKS:
                requested.set()
            else:
                metrics.protocol_errors["legacy_bad_request"] += 1
                await connection.send(
                    json.dumps(
                        {"error": "bad_request", "message": 'send {"request": "more ticks"}'}
                    )
                )
    except ConnectionClosed:
        pass
    finally:
        requested.set()
