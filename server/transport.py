"""The I/O side of the streams: websockets connections as sinks, and performing an ``Output``.

The stream logic (server/streams/) decides; this module writes. Fan-out frames each message
once as a WebSocket frame and hands the same bytes to every subscriber's transport.
"""

from __future__ import annotations

import asyncio

from websockets.asyncio.server import ServerConnection, broadcast
from websockets.protocol import State

from server.protocol import binary_frame
from server.streams.live import Output

_closing: set[asyncio.Task[None]] = set()  # keeps close tasks alive until they finish


class WebSocketSink:
    """A Sink over a websockets connection: writes go straight to its transport buffer."""

    def __init__(self, connection: ServerConnection) -> None:
        self.connection = connection

    def write(self, data: bytes | str) -> None:
        """Queue one whole message without waiting (never blocks the stream)."""
        broadcast((self.connection,), data)

    def write_frame(self, frame: bytes) -> None:
        """Write a prepared binary frame straight to the transport.

        Safe under the same conditions broadcast() checks: the connection is open and no
        fragmented message is being sent. Compression is off on this server, so no extension
        transforms frames; anything websockets queues itself is flushed as soon as it is made.
        """
        connection = self.connection
        if connection.protocol.state is State.OPEN and connection.send_in_progress is None:
            connection.transport.write(frame)

    def buffered(self) -> int:
        transport = self.connection.transport
        return 0 if transport.is_closing() else transport.get_write_buffer_size()

    def close(self, code: int, reason: str) -> None:
        """Start closing with a WebSocket close code, without waiting for the handshake."""
        task = asyncio.get_running_loop().create_task(
            self.connection.close(code, close_reason(reason))
        )
        _closing.add(task)
        task.add_done_callback(_closing.discard)

    @property
    def is_open(self) -> bool:
        return self.connection.protocol.state is State.OPEN


def close_reason(reason: str) -> str:
    """A close reason that fits the 123 bytes a close frame allows (RFC 6455 5.5)."""
    data = reason.encode()
    if len(data) <= 123:
        return reason
    return data[:120].decode(errors="ignore") + "..."


def write_all(sinks: list, data: bytes) -> None:
    """One message to many sinks, framed once for all the WebSocket connections among them.

    websockets' own send path builds a new frame (a copy of the message) per connection;
    writing one prepared frame to each transport saves about a third of the fan-out CPU.
    Sinks that are not WebSocketSinks (tests) get ``write(data)``.
    """
    frame = None
    opened = State.OPEN
    for sink in sinks:
        if isinstance(sink, WebSocketSink):
            if frame is None:
                frame = binary_frame(data)
            connection = sink.connection  # write_frame, inlined: this runs per subscriber
            if connection.protocol.state is opened and connection.send_in_progress is None:
                connection.transport.write(frame)
        else:
            sink.write(data)


def perform(output: Output) -> None:
    """Write what the stream logic decided, in its order, then start the closes."""
    for data, sinks in output.sends:
        write_all(sinks, data)
    for sink, code, reason in output.closes:
        sink.close(code, reason)
