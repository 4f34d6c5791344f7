"""One WebSocket connection on a recording or a live match: its own playback plus range fetches.

A thin shell: Playback and Fetch decide what to send; this module awaits the socket, so a
client that stops reading holds back only itself, with memory bounded by websockets' write
buffer. A recording whose file changes or breaks while it is played ends this session alone:
the client gets ``recording_unreadable`` and close code 4010, and may reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from processing.recording import RecordingError, shown
from server import protocol
from server.config import DEFAULT_BUFFER_S, MAX_BUFFER_S
from server.live_driver import FILE_CHECK_S
from server.metrics import Metrics
from server.session_errors import RequestErrors
from server.streams.encoding import ConnectionOptions
from server.streams.fetch import Fetch
from server.streams.playback import EDGE_POLL_S, Playback
from server.streams.store import FrameStore

REPLAY_REQUESTS = frozenset(
    {"play", "pause", "speed", "seek", "step", "buffer", "fetch", "credit", "cancel", "ping"}
)
OUTBOX_BYTES = 256 * 1024  # replies waiting for the writer (docs/deploy.md, "Sizing")

log = logging.getLogger(__name__)


class Outbox:
    """Replies waiting for the writer, bounded by bytes (a reply may hold frames): the reader
    waits, and so stops reading requests, while the queued replies would pass ``limit``. An
    empty outbox takes one reply whatever its size."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.bytes = 0
        self._replies: deque[bytes] = deque()
        self._room = asyncio.Event()

    async def put(self, reply: bytes) -> None:
        while self._replies and self.bytes + len(reply) > self.limit:
            self._room.clear()
            await self._room.wait()
        self._replies.append(reply)
        self.bytes += len(reply)

    def empty(self) -> bool:
        return not self._replies

    def get_nowait(self) -> bytes:
        reply = self._replies.popleft()
        self.bytes -= len(reply)
        self._room.set()
        return reply


class ReplaySession:
    def __init__(
        self,
        connection: ServerConnection,
        stream_id: str,
        store: FrameStore,
        description: dict,
        metrics: Metrics,
        options: ConnectionOptions,
    ) -> None:
        self.connection = connection
        self.options = options
        self.id = stream_id
        self.store = store
        self.description = description
        self.metrics = metrics
        rate = float(store.meta["tickrate"])
        self.max_buffer = int(MAX_BUFFER_S * rate)
        self.count_frames = metrics.frame_counter(stream_id)
        self.playback = Playback(
            stream_id,
            store,
            int(DEFAULT_BUFFER_S * rate),
            time.monotonic(),
            on_frames=self.count_frames,
            options=options,
        )
        self.fetch: Fetch | None = None
        # Replies waiting for the writer; when full, requests are no longer read.
        self.outbox = Outbox(OUTBOX_BYTES)
        self.wake = asyncio.Event()
        self.errors = RequestErrors(self._reply, metrics, stream_id)

    async def run(self) -> None:
        reader: asyncio.Task[None] | None = None
        try:
            await self.connection.send(self._hello())
            for message in self.playback.seek_index(0, time.monotonic(), keep_paused=True):
                await self.connection.send(message)  # the state, then the first frame
            reader = asyncio.create_task(self._read())
            await self._write_loop(reader)
        except ConnectionClosed:
            pass
        except RecordingError as exc:  # met while sending: the file changed or broke
            log.warning("replay of %r stopped: %s", self.id, exc)
            self.metrics.protocol_errors["recording_unreadable"] += 1
            with contextlib.suppress(ConnectionClosed):
                await self.connection.send(protocol.recording_unreadable(self.id))
            self.errors.unreadable = True
        finally:
            if reader is not None:
                reader.cancel()
        if self.errors.unreadable:  # this session cannot go on; the client may reconnect
            with contextlib.suppress(ConnectionClosed):
                while not self.outbox.empty():  # the guard's error reply, if it was a request
                    await self.connection.send(self.outbox.get_nowait())
            code, reason = protocol.CLOSE_RECORDING_UNREADABLE, protocol.UNREADABLE_REASON
            await self.connection.close(code, reason)
        elif reader is not None and reader.done() and not reader.cancelled() and reader.exception():
            raise reader.exception()  # a bug, not a client error: let websockets log it

    def _hello(self) -> bytes:
        meta = self.store.meta
        return protocol.pack(
            {
                "type": "hello",
                "server": protocol.SERVER_NAME,
                "protocol": protocol.PROTOCOL_VERSION,
                "server_time": time.time(),
                "stream": self.description,
                "live": not self.store.complete,
                "rounds": [
                    {"round": n, "tick": tick} for n, tick in enumerate(meta["round_starts"], 1)
                ],
                "roster": meta["roster"],
                "teams": meta["teams"],
                "max_buffer": self.max_buffer,
            }
        )

    async def _write_loop(self, reader: asyncio.Task[None]) -> None:
        checked_at = time.monotonic()
        while not reader.done():
            if time.monotonic() - checked_at >= FILE_CHECK_S:  # cp over it reads cleanly too
                checked_at = time.monotonic()
                self._check_file()
            while not self.outbox.empty():
                await self._send(self.outbox.get_nowait())
            messages, wake = self.playback.poll(time.monotonic())
            for message in messages:
                await self._send(message)
            if self.fetch is not None:
                parts = self.fetch.next_parts()
                if parts is not None:
                    await self._send_parts(parts)
                    continue
                if self.fetch.done:
                    fetch = self.fetch
                    await self._send(fetch.end_message())
                    if self.fetch is fetch:  # not replaced by a new fetch while we sent
                        self.fetch = None
                    continue
                if self.fetch.credit > 0:  # waiting for a growing store's next frames
                    edge = time.monotonic() + EDGE_POLL_S
                    wake = edge if wake is None else min(wake, edge)
            if not self.outbox.empty():
                continue
            self.wake.clear()
            timeout = None if wake is None else max(0.0, wake - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout)

    def _check_file(self) -> None:
        """Raise RecordingError if the recording's open file was changed in place."""
        if self.store.overwritten():
            raise RecordingError(f"{shown(self.store.name)}: overwritten in place while played")

    async def _send(self, message: bytes) -> None:
        await self.connection.send(message)
        self.metrics.sent(self.id, 0, len(message))  # frames: counted as they are made

    async def _send_parts(self, parts: list[bytes]) -> None:
        """One message given in parts, written as one WebSocket frame straight to the transport:
        no join of envelope and frames and no copy by websockets' framing, the biggest costs
        of a fetch. Then wait while the transport holds more than the write limit, as
        websockets' send does, so memory stays bounded."""
        connection = self.connection
        if connection.protocol.state is not State.OPEN or connection.send_in_progress is not None:
            await self._send(b"".join(parts))  # websockets raises ConnectionClosed, or waits
            return
        size = sum(len(part) for part in parts)
        connection.transport.writelines([protocol.frame_header(size), *parts])
        self.metrics.sent(self.id, 0, size)
        await connection.drain()

    async def _read(self) -> None:
        try:
            async for message in self.connection:
                if not await self.errors.admit(time.monotonic()):
                    continue
                async with self.errors.guard() as attempt:
                    attempt.request = protocol.decode_request(message, REPLAY_REQUESTS)
                    for reply in self._apply(attempt.request, time.monotonic()):
                        await self._reply(reply)
                self.wake.set()
                if self.errors.unreadable:
                    break  # the writer sends the error and closes
        except ConnectionClosed:
            pass
        finally:
            self.wake.set()  # let the writer see that the reader is gone

    async def _reply(self, message: bytes) -> None:
        self.wake.set()  # the writer may be asleep while the outbox is full
        await self.outbox.put(message)

    def _apply(self, request: protocol.Request, now: float) -> list[bytes]:
        playback, kind = self.playback, request.type
        if kind == "ping":
            # ``now`` is monotonic (it paces playback); clients compare wall clocks.
            return [protocol.pack({"type": "pong", "id": request.id, "server_time": time.time()})]
        if kind == "play":
            return playback.play(now)
        if kind == "pause":
            return playback.pause(now)
        if kind == "speed":
            return playback.set_speed(request["value"], now)
        if kind == "step":
            return playback.step(request.get("delta", 1), now)
        if kind == "buffer":
            ticks = request["ticks"]
            if not 0 <= ticks <= self.max_buffer:
                raise protocol.ProtocolError(
                    "bad_field", f"buffer must be 0..{self.max_buffer} frames, got {ticks}"
                )
            return playback.set_buffer(ticks, now)
        if kind == "seek":
            given = [k for k in ("tick", "time", "round") if k in request.fields]
            if len(given) != 1:
                raise protocol.ProtocolError("bad_field", "seek takes one of: tick, time, round")
            if given[0] == "tick":
                return playback.seek_tick(request["tick"], now)
            if given[0] == "time":
                return playback.seek_time(request["time"], now)
            return playback.seek_round(request["round"], now)
        if kind == "fetch":
            self.fetch = Fetch(
                self.id,
                self.store,
                request["from_tick"],
                request["to_tick"],
                request.get("credit", 1024),
                request.id,
                request.get("resume_after"),
                on_frames=self.count_frames,
                options=self.options,
            )
            return []
        if kind == "credit":
            if self.fetch is not None:  # credit racing a fetch that just ended is harmless
                self.fetch.add_credit(request["frames"])
            return []
        if kind == "cancel":
            self.fetch = None
            return [protocol.pack({"type": "fetch_cancelled", "stream": self.id})]
        raise AssertionError(kind)
