"""`eeict gsi-replay`: post a capture to an ingest endpoint the way the game would.

Like CS2: one request at a time, the next only after the answer, JSON bodies, the token in
each payload's ``auth`` block. Pace: ``provider.timestamp`` has whole seconds only, so the
posts of one second are spread evenly across it (k-th of n at +k/n s); ``--speed X`` divides
every wait by X. When the server answers slower than the pace, posts go out back to back
(none is skipped).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from tqdm import tqdm

from processing.gsi.capture import CaptureError, count_payloads, read_capture


class ReplayError(Exception):
    """The replay stopped: the server refused a post or could not be reached."""


@dataclass
class ReplayResult:
    posted: int
    seconds: float  # wall time from the first post to the last answer


def paced(payloads: Iterable[dict]) -> Iterator[tuple[float, dict]]:
    """(capture time, payload): each second's posts spread evenly across that second."""
    group: list[dict] = []
    second: int | None = None
    floor = float("-inf")
    for payload in payloads:
        stamp = payload.get("provider", {}).get("timestamp")
        if not isinstance(stamp, int) or isinstance(stamp, bool):
            stamp = None  # no usable timestamp: goes with the current second
        if group and stamp is not None and stamp != second:
            floor = yield from _spread(group, second, floor)
            group = []
        if stamp is not None:
            second = stamp
        group.append(payload)
    if group:
        yield from _spread(group, second, floor)


def _spread(
    group: list[dict], second: int | None, floor: float
) -> Generator[tuple[float, dict], None, float]:
    """The group's posts at second + k/n; a second earlier than the last keeps the order."""
    base = max(float(second or 0), floor)
    for k, payload in enumerate(group):
        yield base + k / len(group), payload
    return base + 1.0


def with_token(payload: dict, token: str | None) -> dict:
    """A copy of the payload with ``token`` in its ``auth`` block, as the cfg makes the game do."""
    if token is None:
        return payload
    return {**payload, "auth": {**payload.get("auth", {}), "token": token}}


async def replay(
    payloads: Iterable[dict],
    url: str,
    speed: float = 1.0,
    token: str | None = None,
    progress: tqdm | None = None,
    timeout_s: float = 10.0,
) -> ReplayResult:
    """Post every payload in order at the capture's pace divided by ``speed``."""
    if speed <= 0:
        raise ValueError("speed must be > 0")
    loop = asyncio.get_running_loop()
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    posted, start, first_time = 0, 0.0, 0.0
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for capture_time, payload in paced(payloads):
            if posted == 0:
                start, first_time = loop.time(), capture_time
            wait = start + (capture_time - first_time) / speed - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            body = json.dumps(with_token(payload, token), separators=(",", ":")).encode()
            try:
                async with session.post(
                    url, data=body, headers={"Content-Type": "application/json"}
                ) as response:
                    answer = await response.read()
                    if not 200 <= response.status < 300:
                        detail = answer[:200].decode("utf-8", "replace").strip()
                        raise ReplayError(
                            f"post {posted + 1} refused: HTTP {response.status} {detail}"
                        )
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise ReplayError(
                    f"post {posted + 1}: cannot reach {url} ({type(exc).__name__}: {exc}); "
                    "is the server running and the URL right?"
                ) from exc
            posted += 1
            if progress is not None:
                progress.update(1)
    return ReplayResult(posted, loop.time() - start if posted else 0.0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `eeict gsi-replay`."""
    parser.add_argument("capture", type=Path, help="capture .txt or .zip (one payload a line)")
    parser.add_argument(
        "--url", required=True, help="ingest endpoint, e.g. http://127.0.0.1:8081/gsi/<match>"
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="times faster than the capture's pace (default 1: the original pace, each "
        "second's posts spread evenly across it)",
    )
    parser.add_argument("--token", help="put this token into each payload's auth block")
    parser.add_argument("--limit", type=int, help="post at most N payloads")
    parser.add_argument(
        "--skip",
        type=int,
        default=0,
        help="start after the first N payloads (go on with a replay that stopped at N)",
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for each answer (default 10)"
    )


def run(args: argparse.Namespace) -> int:
    """Replay the capture; 0 when every post was answered 2xx, 1 otherwise, 2 for bad options."""
    if args.speed <= 0 or (args.limit is not None and args.limit < 1) or args.timeout <= 0:
        print("gsi-replay: --speed and --timeout must be > 0, --limit >= 1", file=sys.stderr)
        return 2
    if args.skip < 0:
        print("gsi-replay: --skip must be >= 0", file=sys.stderr)
        return 2
    if not args.url.startswith(("http://", "https://")):
        print(f"gsi-replay: --url {args.url!r} is not an http(s) URL", file=sys.stderr)
        return 2
    try:
        total = count_payloads(args.capture, args.limit, args.skip)
        with tqdm(total=total, unit="post", desc="gsi-replay", file=sys.stderr) as bar:
            result = asyncio.run(
                replay(
                    read_capture(args.capture, args.limit, args.skip),
                    args.url,
                    args.speed,
                    args.token,
                    bar,
                    args.timeout,
                )
            )
    except (CaptureError, ReplayError) as exc:
        print(f"gsi-replay: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("gsi-replay: interrupted", file=sys.stderr)
        return 130
    print(f"gsi-replay: posted {result.posted} payloads in {result.seconds:.1f} s", file=sys.stderr)
    return 0
