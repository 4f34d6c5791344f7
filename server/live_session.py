"""One WebSocket connection subscribed to a live stream: a thin shell around LiveStream."""

from __future__ import annotations

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from server import protocol
from server.metrics import Metrics
from server.streams.live import LiveStream, LiveSubscriber
from server.streams.sink import WebSocketSink

LIVE_REQUESTS = frozenset({"subscribe", "buffer", "unsubscribe", "ping"})


async def serve_live(
    connection: ServerConnection, stream: LiveStream, metrics: Metrics, default_buffer: int
) -> None:
    """Answer requests; the stream itself writes the frames.

    Replies are awaited (``send`` waits while the connection's buffer is full), so a client
    that floods requests without reading stops being read instead of growing server memory.
    """
    sink = WebSocketSink(connection)
    await connection.send(stream.hello(stream.clock()))
    subscriber: LiveSubscriber | None = None
    try:
        async for message in connection:
            request = None
            try:
                request = protocol.decode_request(message, LIVE_REQUESTS)
                subscriber = await _apply(
                    request, connection, stream, sink, subscriber, default_buffer
                )
            except protocol.ProtocolError as exc:
                if request is not None:
                    exc.request_id = request.id
                metrics.protocol_errors[exc.code] += 1
                await connection.send(exc.reply())
    except ConnectionClosed:
        pass
    finally:
        if subscriber is not None:
            stream.unsubscribe(subscriber)


async def _apply(
    request: protocol.Request,
    connection: ServerConnection,
    stream: LiveStream,
    sink: WebSocketSink,
    subscriber: LiveSubscriber | None,
    default_buffer: int,
) -> LiveSubscriber | None:
    kind = request.type
    if kind == "ping":
        await connection.send(
            protocol.pack({"type": "pong", "id": request.id, "server_time": stream.clock()})
        )
    elif kind == "subscribe":
        buffer = request.get("buffer", default_buffer)
        stream.check_request(buffer, request.get("resume_seq"))
        if subscriber is not None:
            stream.unsubscribe(subscriber)
        await connection.send(
            protocol.pack({"type": "subscribed", "stream": stream.id, "buffer": buffer})
        )
        subscriber = stream.subscribe(sink, buffer, request.get("resume_seq"))
    elif kind == "buffer":
        if subscriber is None:
            raise protocol.ProtocolError("not_subscribed", "send subscribe before buffer")
        stream.set_buffer(subscriber, request["ticks"])
    elif kind == "unsubscribe":
        if subscriber is not None:
            stream.unsubscribe(subscriber)
        await connection.send(protocol.pack({"type": "unsubscribed", "stream": stream.id}))
        subscriber = None
    return subscriber
