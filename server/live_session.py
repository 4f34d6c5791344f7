"""One WebSocket connection subscribed to a live stream: a thin shell around LiveStream.

The stream decides what to send (``Output``); this shell performs it, answers requests and
wakes the stream's driver when a subscription changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from server import protocol
from server.live_driver import LiveDriver
from server.metrics import Metrics
from server.session_errors import RequestErrors
from server.streams.encoding import ConnectionOptions
from server.streams.live import LiveStream, LiveSubscriber
from server.transport import WebSocketSink, perform

LIVE_REQUESTS = frozenset({"subscribe", "buffer", "unsubscribe", "ping"})


class LiveSession:
    def __init__(
        self,
        connection: ServerConnection,
        driver: LiveDriver,
        metrics: Metrics,
        default_buffer: int,
        options: ConnectionOptions,
    ) -> None:
        self.connection = connection
        self.options = options
        self.driver = driver
        self.stream: LiveStream = driver.stream
        self.clock: Callable[[], float] = driver.clock
        self.sink = WebSocketSink(connection)
        self.default_buffer = default_buffer
        self.subscriber: LiveSubscriber | None = None
        self.errors = RequestErrors(connection.send, metrics, self.stream.id)

    async def run(self) -> None:
        """Answer requests; the stream itself writes the frames.

        Replies are awaited (``send`` waits while the connection's buffer is full), so a
        client that floods requests without reading stops being read instead of growing
        server memory.
        """
        await self.connection.send(self.stream.hello(self.clock()))
        try:
            async for message in self.connection:
                if not await self.errors.admit(time.monotonic()):
                    continue
                async with self.errors.guard() as attempt:
                    attempt.request = protocol.decode_request(message, LIVE_REQUESTS)
                    await self._apply(attempt.request)
        except ConnectionClosed:
            pass
        finally:
            if self.subscriber is not None:
                self.stream.unsubscribe(self.subscriber)

    async def _apply(self, request: protocol.Request) -> None:
        stream, kind = self.stream, request.type
        if kind == "ping":
            pong = {"type": "pong", "id": request.id, "server_time": self.clock()}
            await self.connection.send(protocol.pack(pong))
        elif kind == "subscribe":
            buffer = request.get("buffer", self.default_buffer)
            stream.check_request(buffer, request.get("resume_seq"))
            if self.subscriber is not None:
                stream.unsubscribe(self.subscriber)
            reply = {"type": "subscribed", "stream": stream.id, "buffer": buffer}
            await self.connection.send(protocol.pack(reply))
            self.subscriber, output = stream.subscribe(
                self.sink,
                buffer,
                self.clock(),
                request.get("resume_seq"),
                request.get("epoch"),
                self.options,
            )
            perform(output)
            self.driver.wake()
        elif kind == "buffer":
            if self.subscriber is None:
                raise protocol.ProtocolError("not_subscribed", "send subscribe before buffer")
            perform(stream.set_buffer(self.subscriber, request["ticks"], self.clock()))
            self.driver.wake()
        elif kind == "unsubscribe":
            if self.subscriber is not None:
                stream.unsubscribe(self.subscriber)
            await self.connection.send(protocol.pack({"type": "unsubscribed", "stream": stream.id}))
            self.subscriber = None
