"""The in-memory broker: one process, no Redis (the default; ``make serve`` needs nothing else).

Same contract as the Redis engine, so the server cannot tell them apart: frames kept in a deque
capped to the window, an epoch per incarnation, readers woken by an event on every change, an
ended stream forgotten ``ended_keep_s`` after its end.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import secrets
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .base import (
    DEFAULT_WINDOW,
    ENDED_KEEP_S,
    MAX_READ_FRAMES,
    EpochMismatch,
    ReadResult,
    StreamInfo,
    UnknownStream,
    check_frames,
    ends,
    json_copy,
    lost_before,
)


def new_epoch() -> str:
    """An epoch no other incarnation has: start time (for people reading logs) and randomness."""
    return f"{time.time_ns() // 1_000_000:x}-{secrets.token_hex(4)}"


@dataclass
class _Stream:
    epoch: str
    meta: dict[str, Any]
    frames: deque[tuple[int, bytes]]
    state: dict[str, Any] = field(default_factory=dict)
    last_seq: int | None = None
    forget: asyncio.TimerHandle | None = None  # set once the stream ended


class MemoryBroker:
    """Frames of live streams inside this process."""

    def __init__(self, window: int = DEFAULT_WINDOW, ended_keep_s: float = ENDED_KEEP_S) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1 frame, got {window}")
        self.window = window
        self.ended_keep_s = ended_keep_s
        self._streams: dict[str, _Stream] = {}
        self._changed: dict[str, asyncio.Event] = {}

    @property
    def healthy(self) -> bool:
        return True

    async def ping(self) -> bool:
        return True

    async def start_stream(self, stream: str, meta: dict[str, Any]) -> str:
        epoch = new_epoch()
        old = self._streams.get(stream)
        if old is not None and old.forget is not None:
            old.forget.cancel()
        self._streams[stream] = _Stream(epoch, json_copy(meta, "meta"), deque(maxlen=self.window))
        self._wake(stream)
        return epoch

    async def publish(self, stream: str, epoch: str, seq: int, data: bytes) -> None:
        await self.publish_many(stream, epoch, [(seq, data)])

    async def publish_many(
        self, stream: str, epoch: str, frames: Sequence[tuple[int, bytes]]
    ) -> None:
        entry = self._current(stream, epoch)
        checked = check_frames(frames, entry.last_seq)
        if not checked:
            return
        entry.frames.extend((seq, bytes(data)) for seq, data in checked)
        entry.last_seq = checked[-1][0]
        self._wake(stream)

    async def read(
        self, stream: str, after_seq: int, epoch: str | None, block_s: float = 0.0
    ) -> ReadResult:
        result = self._read_now(stream, after_seq, epoch)
        if result.frames or result.reset or block_s <= 0:
            return result
        changed = self._changed.setdefault(stream, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), block_s)
        return self._read_now(stream, after_seq, epoch)

    def _read_now(self, stream: str, after_seq: int, epoch: str | None) -> ReadResult:
        entry = self._streams.get(stream)
        if entry is None:
            return ReadResult(epoch=None, frames=[])
        reset = epoch is not None and epoch != entry.epoch
        after = -1 if reset else after_seq
        start = bisect.bisect_right(entry.frames, after, key=lambda frame: frame[0])
        stop = min(len(entry.frames), start + MAX_READ_FRAMES)
        frames = [entry.frames[i] for i in range(start, stop)]
        lost = lost_before(frames[0][0] if frames else None, after + 1)
        meta = json_copy(entry.meta, "meta") if epoch != entry.epoch else None
        return ReadResult(entry.epoch, frames, reset, lost, dict(entry.state), meta)

    async def streams(self) -> dict[str, StreamInfo]:
        return {
            name: StreamInfo(entry.epoch, json_copy(entry.meta, "meta"), dict(entry.state))
            for name, entry in self._streams.items()
            if not ends(entry.state)
        }

    async def mark(self, stream: str, epoch: str, **state: Any) -> None:
        entry = self._current(stream, epoch)
        entry.state.update(json_copy(state, "state"))
        if ends(entry.state) and entry.forget is None:
            loop = asyncio.get_running_loop()
            entry.forget = loop.call_later(self.ended_keep_s, self._forget, stream, entry)
        self._wake(stream)

    def _forget(self, stream: str, entry: _Stream) -> None:
        """An ended stream's keep time is over (unless a new incarnation replaced it)."""
        if self._streams.get(stream) is entry:
            del self._streams[stream]
            self._wake(stream)

    async def close(self) -> None:
        for entry in self._streams.values():
            if entry.forget is not None:
                entry.forget.cancel()
        for event in self._changed.values():
            event.set()
        self._changed.clear()

    def _current(self, stream: str, epoch: str) -> _Stream:
        entry = self._streams.get(stream)
        if entry is None:
            raise UnknownStream(f"stream {stream!r} was not started")
        if entry.epoch != epoch:
            raise EpochMismatch(f"stream {stream!r} is at epoch {entry.epoch}, not {epoch}")
        return entry

    def _wake(self, stream: str) -> None:
        """Wake every reader blocked on the stream; later readers wait on a fresh event."""
        event = self._changed.pop(stream, None)
        if event is not None:
            event.set()
