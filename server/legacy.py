"""``/demodata``: the old Tornado server's protocol, fed from the same live streams.

One JSON text message per tick, bursts of 16 ticks, the next burst for each
``{"request": "more ticks"}`` the client sends, and ``EOF`` at the end. Every request is
answered: requests are counted as credit (as the fetch protocol's credit), so a client that
sends several at once gets as many bursts. A client is never more than ``MAX_AHEAD_S`` ahead
of the shared playhead (its bursts wait), and one that falls more than a second behind jumps
to the live edge, since this protocol cannot say "skipped". A stream whose recording became
unreadable (its file overwritten in place) gets ``{"error": "recording_unreadable"}`` and
close code 4010.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import weakref
from collections import OrderedDict

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from processing.recording import RecordingError
from server import protocol
from server.live_driver import LiveDriver
from server.metrics import Metrics
from server.rate_limit import RateLimit
from server.streams.feed import LiveFeed
from server.streams.live import LiveStream

log = logging.getLogger(__name__)

BURST = 16
MAX_AHEAD_S = 10.0
MAX_CREDIT = 64  # bursts a client may have asked for and not yet received
MORE_TICKS = {"request": "more ticks"}
RECOVERY_WAIT_S = 3.0  # a stream's driver replaces an overwritten file's feed within this


class LegacyEncoder:
    """JSON text of each frame, made once per stream and shared by every legacy client."""

    def __init__(self, stream: LiveStream) -> None:
        self.stream = stream
        self._feed: LiveFeed = stream.feed
        self._cache: OrderedDict[int, str] = OrderedDict()

    def text(self, seq: int) -> str:
        if self.stream.feed is not self._feed:  # a new feed (a replaced file): other frames
            self._feed = self.stream.feed
            self._cache.clear()
        text = self._cache.get(seq)
        if text is None:
            text = json.dumps(self.stream.feed.frame(seq), separators=(",", ":"))
            self._cache[seq] = text
            if len(self._cache) > 4 * 64 * 10:
                self._cache.popitem(last=False)
        return text


_encoders: weakref.WeakKeyDictionary[LiveStream, LegacyEncoder] = weakref.WeakKeyDictionary()


class Credit:
    """Bursts the client asked for; the first one is granted unasked, as the old server did."""

    def __init__(self) -> None:
        self.bursts = 1
        self.changed = asyncio.Event()
        self.closed = False

    def grant(self) -> bool:
        if self.bursts >= MAX_CREDIT:
            return False
        self.bursts += 1
        self.changed.set()
        return True


async def serve_legacy(
    connection: ServerConnection, driver: LiveDriver, clock, metrics: Metrics
) -> None:
    stream = driver.stream
    encoder = _encoders.get(stream) or _encoders.setdefault(stream, LegacyEncoder(stream))
    credit = Credit()
    reader = asyncio.create_task(_read_requests(connection, credit, metrics))
    next_seq = max(0, stream.feed.playhead(clock()))
    try:
        while True:
            if credit.bursts == 0:
                credit.changed.clear()
                await credit.changed.wait()
            if credit.closed:  # the client left
                break
            if driver.stopped is not None:  # its recording became unreadable
                await _unreadable(connection, metrics)
                break
            if stream.closed:  # the live match restarted: the client reconnects into it
                await connection.close(protocol.CLOSE_RESTART, "the match restarted")
                break
            feed = stream.feed  # read anew: a replica may have moved to a new segment
            playhead = feed.playhead(clock())
            if playhead - next_seq > feed.rate or next_seq < feed.oldest():
                next_seq = max(playhead, feed.oldest())
            stop = next_seq + BURST
            end, available = feed.end(), feed.available()
            if end is not None:
                stop = min(stop, end)
            wait_frames = max(stop - playhead - int(MAX_AHEAD_S * feed.rate), 0)
            if available is not None and stop > available:
                wait_frames = max(wait_frames, 1)  # a match in play: its frames do not exist yet
            if wait_frames:
                await asyncio.sleep(wait_frames / feed.rate)
                continue
            credit.bursts -= 1
            try:
                for seq in range(next_seq, stop):
                    text = encoder.text(seq)
                    await connection.send(text)
                    metrics.sent("demodata", 1, len(text))
                    next_seq = seq + 1
            except RecordingError as exc:
                if not await _replaced(driver, feed, exc):
                    if driver.stopped is None:  # else the driver said so, once
                        log.warning("/demodata on %r stopped: %s", stream.id, exc)
                    await _unreadable(connection, metrics)
                    break
                credit.bursts += 1  # the rest of this burst comes from the new file
                continue
            if end is not None and next_seq >= end:
                await connection.send("EOF")
                break
    except ConnectionClosed:
        pass
    finally:
        reader.cancel()


async def _replaced(driver: LiveDriver, feed: LiveFeed, exc: RecordingError) -> bool:
    """Whether the stream's driver, told of ``exc``, plays a new feed (a valid new file) within
    RECOVERY_WAIT_S; False when it stopped the stream instead, or did not answer."""
    driver.failed(feed, exc)
    for _ in range(int(RECOVERY_WAIT_S / 0.1)):
        if driver.stream.feed is not feed:
            return True
        if driver.stopped is not None:
            return False
        await asyncio.sleep(0.1)
    return False


async def _unreadable(connection: ServerConnection, metrics: Metrics) -> None:
    """Tell the client in this protocol's words, then close (it may reconnect later)."""
    metrics.protocol_errors["recording_unreadable"] += 1
    message = protocol.UNREADABLE_REASON
    with contextlib.suppress(ConnectionClosed):
        await connection.send(json.dumps({"error": "recording_unreadable", "message": message}))
        await connection.close(protocol.CLOSE_RECORDING_UNREADABLE, message)


async def _read_requests(connection: ServerConnection, credit: Credit, metrics: Metrics) -> None:
    limit = RateLimit()
    try:
        async for message in connection:
            if not limit.allow(time.monotonic()):
                metrics.protocol_errors["rate_limited"] += 1
                continue
            if protocol.decode_legacy(message) == MORE_TICKS:
                if credit.grant():
                    continue
                message = f"{MAX_CREDIT} bursts already requested; wait for them"
                error = {"error": "too_many_requests", "message": message}
            else:
                error = {"error": "bad_request", "message": 'send {"request": "more ticks"}'}
            metrics.protocol_errors["legacy_bad_request"] += 1
            await connection.send(json.dumps(error))
    except ConnectionClosed:
        pass
    finally:
        credit.closed = True
        credit.changed.set()
