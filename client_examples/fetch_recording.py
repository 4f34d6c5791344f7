#!/usr/bin/env python3
"""Download a tick range of a recording over WebSocket, with credit flow control and resume.

Opens ``/replay/<recording>``, sends ``fetch`` with a credit of N frames, grants more credit
as frames are written, and checks the frame count against ``fetch_end``. If the connection
drops, it reconnects and fetches again with ``resume_after`` = the last tick written, so every
tick lands in the file exactly once. Frames are written as a msgpack stream (the server's own
bytes, one map per frame) or as JSON lines. It asks for compressed messages
(``?encoding=deflate``: raw DEFLATE, inflated with zlib, the frames' bytes unchanged);
``--encoding none`` asks for plain ones.

``--events`` prints the recording's events index instead (kills, bomb plant/defuse/explosion,
round starts and ends, with their ticks: where to seek to), read from
``GET /recordings/<id>/events`` on the server's HTTP port (the WebSocket port redirects there).

    python client_examples/fetch_recording.py --url ws://127.0.0.1:8080 generated --out g.msgpack
    python client_examples/fetch_recording.py --url ws://127.0.0.1:8080 generated --events
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import quote, urlsplit, urlunsplit

import msgpack
from tqdm import tqdm
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus

MAX_ATTEMPTS = 6  # in a row without a new frame written
FETCH_ID = 1


class FetchError(Exception):
    """The server refused the request; retrying would not help."""


@dataclass
class Progress:
    """What is in the file so far; enough to resume after a dropped connection."""

    written: int = 0
    last_tick: int | None = None
    last_seq: int | None = None  # frame index in the recording: catches gaps and repeats


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recording", metavar="RECORDING", help="recording id (see /recordings)")
    parser.add_argument("--url", default="ws://127.0.0.1:8080", help="server (ws:// or wss://)")
    parser.add_argument("--from-tick", type=int, help="first tick (default: the first)")
    parser.add_argument("--to-tick", type=int, help="last tick, inclusive (default: the last)")
    parser.add_argument("--out", help="output file (needed unless --events)")
    parser.add_argument("--format", choices=("msgpack", "jsonl"), default="msgpack")
    parser.add_argument(
        "--credit", type=int, default=1024, help="frames in flight at most (default 1024)"
    )
    parser.add_argument(
        "--encoding", choices=("deflate", "none"), default="deflate",
        help="ask for compressed messages (default) or plain frames",
    )  # fmt: skip
    parser.add_argument("--token", default="", help="bearer token when the server has one")
    parser.add_argument(
        "--events", action="store_true",
        help="print the recording's events (kills, bomb, rounds, with ticks) and fetch nothing",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.credit < 1:
        parser.error("--credit must be at least 1")
    if not args.events and not args.out:
        parser.error("--out is required (or --events to print the events index)")
    return args


def events_url(ws_url: str, recording: str) -> str:
    """The events index's HTTP URL on the same host and port as the WebSocket URL."""
    parts = urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    path = f"{parts.path.rstrip('/')}/recordings/{quote(recording, safe='')}/events"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def fetch_events(args: argparse.Namespace) -> list[dict[str, Any]]:
    """``GET /recordings/<id>/events`` (following the WebSocket port's redirect)."""
    request = urllib.request.Request(events_url(args.url, args.recording))
    if args.token:
        request.add_header("Authorization", f"Bearer {args.token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)["events"]
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:200]
        raise FetchError(f"events index: HTTP {exc.code} {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise FetchError(f"events index: cannot reach the server ({exc})") from None


def describe_event(event: dict[str, Any]) -> str:
    """One line: tick, type and who (a kill as "killer [weapon HS] victim")."""
    kind = event["type"]
    if kind == "kill":
        tags = " ".join(filter(None, [event.get("weapon"), "HS" if event.get("is_hs") else ""]))
        what = f"{event.get('killer') or 'world'} {f'[{tags}] ' if tags else ''}{event['victim']}"
    elif kind in ("plant", "defuse", "explode"):
        what = event.get("player") or ""
    elif kind == "round_end":
        what = f"{event['winner']} wins, T {event['t_wins']} : {event['ct_wins']} CT"
    else:
        what = ""
    return f"{event['tick']:>9}  {kind:<11} {what}".rstrip()


def frames_raw(data: bytes) -> tuple[dict[str, Any], Iterator[bytes]]:
    """A ``ticks`` message's envelope and the exact bytes of each frame, without re-encoding.

    Plain messages put the ``frames`` array last; compressed ones put ``data`` last: raw
    DEFLATE of one msgpack array of ``count`` frames (docs/protocol.md).
    """
    unpacker = msgpack.Unpacker()
    unpacker.feed(data)
    fields: dict[str, Any] = {}
    for _ in range(unpacker.read_map_header()):
        key = unpacker.unpack()
        if key == "frames":
            return fields, _each_frame(data, unpacker, unpacker.read_array_header())
        fields[key] = unpacker.unpack()
    if "data" not in fields:
        return fields, iter(())
    if fields.get("encoding") != "deflate":
        raise FetchError(f"ticks in an encoding this client does not read: {fields['encoding']}")
    inflated = zlib.decompress(fields.pop("data"), wbits=-15)
    frames = msgpack.Unpacker()
    frames.feed(inflated)
    count = frames.read_array_header()
    if count != fields["count"]:
        raise FetchError(f"ticks say {fields['count']} frames but hold {count}")
    return fields, _each_frame(inflated, frames, count)


def _each_frame(data: bytes, unpacker: msgpack.Unpacker, count: int) -> Iterator[bytes]:
    """The next ``count`` objects of ``unpacker`` (fed with ``data``) as their own bytes."""
    for _ in range(count):
        start = unpacker.tell()
        unpacker.skip()
        yield data[start : unpacker.tell()]


class Writer:
    """Appends frames to the output in the chosen format and tracks progress."""

    def __init__(self, out: IO[bytes], fmt: str, progress: Progress, bar: tqdm) -> None:
        self.out, self.fmt, self.progress, self.bar = out, fmt, progress, bar
        self.start_tick = 0  # first tick asked for: where the progress bar starts

    def write(self, seq: int, raw: bytes) -> None:
        progress = self.progress
        if progress.last_seq is not None and seq != progress.last_seq + 1:
            raise FetchError(f"frame {seq} follows frame {progress.last_seq}: a gap or a repeat")
        frame = msgpack.unpackb(raw)
        if self.fmt == "msgpack":
            self.out.write(raw)
        else:
            self.out.write(json.dumps(frame, separators=(",", ":")).encode() + b"\n")
        previous = self.start_tick - 1 if progress.last_tick is None else progress.last_tick
        self.bar.update(frame["tick"] - previous)
        progress.written += 1
        progress.last_tick, progress.last_seq = frame["tick"], seq


async def fetch_once(
    ws: ClientConnection, args: argparse.Namespace, progress: Progress, writer: Writer, bar: tqdm
) -> None:
    """One connection: hello, fetch (resuming if we have frames), frames, then fetch_end."""
    hello = msgpack.unpackb(await ws.recv())
    if hello.get("type") == "error":
        raise FetchError(f"{hello['code']}: {hello['message']}")
    stream = hello["stream"]
    first = stream["first_tick"] if args.from_tick is None else args.from_tick
    last = stream["last_tick"] if args.to_tick is None else args.to_tick
    bar.total, writer.start_tick = last - first + 1, first
    request: dict[str, Any] = {
        "type": "fetch", "id": FETCH_ID, "from_tick": first, "to_tick": last, "credit": args.credit,
    }  # fmt: skip
    if progress.last_tick is not None:
        request["resume_after"] = progress.last_tick
    await ws.send(msgpack.packb(request))
    received = 0  # in this fetch: fetch_end counts only what it sent
    unacknowledged = 0
    async for data in ws:
        fields, frames = frames_raw(data)
        kind = fields.get("type")
        if kind == "ticks" and fields.get("fetch") == FETCH_ID:
            for i, raw in enumerate(frames):
                writer.write(fields["seq"] + i, raw)
                received += 1
                unacknowledged += 1
            if unacknowledged >= max(1, args.credit // 2):  # keep the pipe full
                await ws.send(msgpack.packb({"type": "credit", "frames": unacknowledged}))
                unacknowledged = 0
        elif kind == "fetch_end":
            end = msgpack.unpackb(data)
            if end["count"] != received:
                raise FetchError(f"fetch_end says {end['count']} frames, received {received}")
            return
        elif kind == "error":
            error = msgpack.unpackb(data)
            raise FetchError(f"{error['code']}: {error['message']}")
    raise ConnectionError("connection closed before fetch_end")


async def fetch(args: argparse.Namespace, out: IO[bytes]) -> Progress:
    url = f"{args.url.rstrip('/')}/replay/{args.recording}"
    if args.encoding != "none":
        url += f"?encoding={args.encoding}"
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else None
    progress = Progress()
    with tqdm(unit="tick", desc=args.recording, file=sys.stderr) as bar:
        writer = Writer(out, args.format, progress, bar)
        failures = 0  # attempts in a row that wrote nothing
        while True:
            written = progress.written
            try:
                async with connect(
                    url, additional_headers=headers, compression=None, max_size=2**22
                ) as ws:
                    await fetch_once(ws, args, progress, writer, bar)
                    return progress
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status < 500:  # 401, 403, 404: asking again gets the same answer
                    raise FetchError(f"refused with HTTP {status}") from None
                reason = f"server answered HTTP {status}"  # 503: starting or stopping
            except (ConnectionClosed, InvalidMessage, OSError) as exc:
                reason = f"connection lost ({exc})"
            failures = 1 if progress.written > written else failures + 1
            if failures >= MAX_ATTEMPTS:
                raise FetchError(f"gave up after {MAX_ATTEMPTS} attempts without progress")
            delay = min(8.0, 0.5 * 2 ** (failures - 1))
            bar.write(f"{reason}; resuming after tick {progress.last_tick} in {delay:.1f} s",
                      file=sys.stderr)  # fmt: skip
            await asyncio.sleep(delay)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.events:
        try:
            events = fetch_events(args)
        except FetchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        for event in events:
            print(describe_event(event))
        return 0
    try:
        with open(args.out, "wb") as out:
            progress = asyncio.run(fetch(args, out))
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print(f"{progress.written} frames, last tick {progress.last_tick} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
