#!/usr/bin/env python3
"""Subscribe to a live stream, buffer it, play it at the stream's rate, survive reconnects.

A reference client for docs/protocol.md: frames go into a deque as they arrive and are played
when the server clock reaches their time (``epoch + seq / rate``); one status line a second
shows how that is going. When the connection drops, it reconnects with exponential backoff and
resumes with ``resume_seq`` = last seq + 1, so no frame is lost (or a ``skip`` says how many).
It asks for compressed bursts (``?encoding=deflate``, raw DEFLATE, inflated with zlib);
``--encoding none`` asks for plain frames. A server that does not compress sends plain frames
either way, and both are read.

    python client_examples/subscribe.py --url ws://127.0.0.1:8080 --stream generated
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import msgpack
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

MAX_BACKOFF_S = 10.0


@dataclass
class Player:
    """What the client knows about the stream and where its playback is."""

    rate: float = 64.0
    epoch: float = 0.0
    offset: float = 0.0  # server clock minus ours (from hello's server_time)
    buffer: deque[tuple[int, dict[str, Any]]] = field(default_factory=deque)
    last_seq: int | None = None  # last seq received: where a reconnect resumes
    played_seq: int | None = None
    played_tick: int | None = None
    received: int = 0  # frames received since the last status line
    skips: int = 0
    skipped: int = 0
    reconnects: int = 0
    streaming: bool = False  # frames arrived on this connection: it works, reset the backoff

    def server_playhead(self) -> float:
        """The seq the server plays right now (fractional)."""
        return (time.time() + self.offset - self.epoch) * self.rate

    def play_due(self) -> None:
        """Pop every buffered frame whose time has come; the last one is 'on screen'."""
        playhead = self.server_playhead()
        while self.buffer and self.buffer[0][0] <= playhead:
            seq, frame = self.buffer.popleft()
            self.played_seq, self.played_tick = seq, frame.get("tick")

    def status(self) -> str:
        lag = "-"
        if self.played_seq is not None:
            lag = f"{(self.server_playhead() - self.played_seq) / self.rate * 1000:+.0f} ms"
        line = (
            f"tick {self.played_tick if self.played_tick is not None else '-':>7}  "
            f"seq {self.played_seq if self.played_seq is not None else '-':>7}  "
            f"buffer {len(self.buffer):>4} frames  lag {lag:>8}  "
            f"received {self.received:>4}/s  skips {self.skips} ({self.skipped} frames)  "
            f"reconnects {self.reconnects}"
        )
        self.received = 0
        return line


def seconds(text: str) -> float:
    """An argparse type: a number of seconds, not negative."""
    value = float(text)
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8080", help="server (ws:// or wss://)")
    parser.add_argument("--stream", default="generated", help="live stream id (see /streams)")
    parser.add_argument(
        "--buffer", type=seconds, default=1.0, help="seconds of frames to hold ahead (default 1)"
    )
    parser.add_argument(
        "--duration", type=seconds, default=0.0, help="seconds to run, 0 = forever (default)"
    )
    parser.add_argument(
        "--encoding", choices=("deflate", "none"), default="deflate",
        help="ask for compressed bursts (default) or plain frames",
    )  # fmt: skip
    parser.add_argument("--token", default="", help="bearer token when the server has one")
    return parser.parse_args(argv)


def tick_frames(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The frames of a ``ticks`` message: a plain ``frames`` array, or ``data`` holding one
    msgpack array of ``count`` frames compressed with raw DEFLATE (docs/protocol.md)."""
    if "frames" in message:
        return message["frames"]
    if message.get("encoding") != "deflate":
        raise ValueError(
            f"ticks in an encoding this client does not read: {message.get('encoding')}"
        )
    frames = msgpack.unpackb(zlib.decompress(message["data"], wbits=-15))
    if len(frames) != message["count"]:
        raise ValueError(f"ticks say {message['count']} frames but hold {len(frames)}")
    return frames


async def subscribe(
    ws: ClientConnection, hello: dict[str, Any], player: Player, buffer_s: float
) -> None:
    """Answer hello with subscribe, resuming after the last frame we have when reconnecting."""
    stream = hello["stream"]
    if player.last_seq is not None and float(stream["epoch"]) != player.epoch:
        player.last_seq = None  # a new timeline (the server restarted): old seqs mean nothing
        player.buffer.clear()
    player.rate, player.epoch = float(stream["rate"]), float(stream["epoch"])
    player.offset = hello["server_time"] - time.time()
    request: dict[str, Any] = {
        "type": "subscribe",
        "buffer": min(hello["max_buffer"], round(buffer_s * player.rate)),
    }
    if player.last_seq is not None:
        request["resume_seq"] = player.last_seq + 1
    await ws.send(msgpack.packb(request))


async def receive(ws: ClientConnection, player: Player, buffer_s: float) -> int | None:
    """One connection's messages; returns an exit code when there is no point reconnecting."""
    async for data in ws:
        message = msgpack.unpackb(data)
        kind = message.get("type")
        if kind == "hello":
            await subscribe(ws, message, player, buffer_s)
        elif kind == "ticks":
            player.streaming = True
            for i, frame in enumerate(tick_frames(message)):
                seq = message["seq"] + i
                if player.last_seq is None or seq > player.last_seq:
                    player.buffer.append((seq, frame))
                    player.last_seq = seq
                    player.received += 1
        elif kind == "skip":  # moved to the live edge: frames up to to_seq never come
            player.skips += 1
            player.skipped += message["skipped"] or 0  # nil: the loss cannot be counted
            player.last_seq = message["to_seq"] - 1
            # Buffered frames from to_seq on belong to a position the server abandoned (a resume
            # it did not know): the frames that follow replace them.
            while player.buffer and player.buffer[-1][0] >= message["to_seq"]:
                player.buffer.pop()
            print(f"skip: {message['skipped']} frames ({message['reason']})")
        elif kind == "end":
            print(f"end of stream at seq {message['seq']}")
            return 0
        elif kind == "error":
            print(f"server error {message['code']}: {message['message']}")
            if message["code"] == "unknown_stream":
                return 2
    return None


async def connection_loop(args: argparse.Namespace, player: Player) -> int:
    """Connect, and reconnect with exponential backoff until the stream ends.

    The backoff resets only once frames arrived: a server that accepts the handshake and then
    closes at once (1013 server full) is retried ever more slowly, not twice a second."""
    url = f"{args.url.rstrip('/')}/live/{args.stream}"
    if args.encoding != "none":
        url += f"?encoding={args.encoding}"
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else None
    backoff = 0.5
    while True:
        player.streaming = False
        try:
            async with connect(url, additional_headers=headers, compression=None) as ws:
                code = await receive(ws, player, args.buffer)
                if code is not None:
                    return code
                print(f"connection closed ({ws.close_code})")  # 1000/1001 end iteration quietly
        except InvalidStatus as exc:
            status = exc.response.status_code
            print(f"refused with HTTP {status}")
            if status in (401, 403, 404):
                return 2
        except ConnectionClosed as exc:
            print(f"connection closed ({exc.rcvd.code if exc.rcvd else 'no close frame'})")
        except InvalidHandshake as exc:  # InvalidMessage, bad upgrade headers: e.g. a proxy
            print(f"handshake failed: {exc!r}")
        except OSError as exc:
            print(f"cannot connect: {exc}")
        if player.streaming:
            backoff = 0.5
        delay = backoff * random.uniform(0.5, 1.0)  # jitter: clients of a restart do not stampede
        print(f"reconnecting in {delay:.1f} s")
        await asyncio.sleep(delay)
        backoff = min(MAX_BACKOFF_S, backoff * 2)
        player.reconnects += 1


async def play_loop(player: Player) -> None:
    """Play frames as their time comes, and print one status line a second."""
    next_status = time.monotonic() + 1.0
    while True:
        player.play_due()
        if time.monotonic() >= next_status:
            print(player.status())
            next_status += 1.0
        await asyncio.sleep(1.0 / player.rate)


async def main_async(args: argparse.Namespace) -> int:
    player = Player()
    network = asyncio.create_task(connection_loop(args, player))
    playing = asyncio.create_task(play_loop(player))
    try:
        done, _ = await asyncio.wait({network}, timeout=args.duration or None)
        return network.result() if done else 0
    finally:
        for task in (network, playing):
            task.cancel()
        await asyncio.gather(network, playing, return_exceptions=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # one status line a second, even into a pipe
    try:
        return asyncio.run(main_async(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
