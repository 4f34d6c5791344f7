"""Range fetch: frames of a tick range as fast as the client's credit allows, then a count.

The client grants credit in frames; the server never has more frames in flight than granted.
Chunks are slices of the store's pre-encoded frames wrapped in a ``ticks`` envelope. On a store
that is still growing (a live match), a range reaching past the newest frame is served as its
frames arrive, and ends when they have or the match ends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from server import protocol
from server.streams.encoding import (
    FETCH_DEFLATE_LEVEL,
    PLAIN,
    ConnectionOptions,
    encode_ticks,
    shape_frames,
)
from server.streams.store import FrameStore

CHUNK_FRAMES = 256  # per message at most, and
CHUNK_BYTES = 960 * 1024  # under the 1 MiB that websockets clients accept by default


class Fetch:
    def __init__(
        self,
        stream_id: str,
        store: FrameStore,
        from_tick: int,
        to_tick: int,
        credit: int,
        request_id: object = None,
        resume_after: int | None = None,
        on_frames: Callable[[int], None] = lambda frames: None,
        options: ConnectionOptions = PLAIN,
    ) -> None:
        meta = store.meta
        if from_tick > to_tick:
            raise protocol.ProtocolError("bad_range", f"from_tick {from_tick} > to_tick {to_tick}")
        if to_tick < meta["first_tick"] or (store.complete and from_tick > meta["last_tick"]):
            raise protocol.ProtocolError(
                "out_of_range",
                f"ticks {from_tick}..{to_tick} are outside the recording "
                f"({meta['first_tick']}..{meta['last_tick']})",
            )
        if credit < 1:
            raise protocol.ProtocolError("bad_field", "credit must be at least 1 frame")
        self.id = stream_id
        self.store = store
        self.request_id = request_id
        self.to_tick = to_tick
        start_tick = from_tick if resume_after is None else max(from_tick, resume_after + 1)
        self.next = store.index_at_or_after(start_tick)
        self.credit = credit
        self.sent = 0
        self.on_frames = on_frames  # told how many frames each message carries
        # A fetch returns every frame of its range: the client's fields and encoding apply,
        # its every-Nth does not.
        self.shape = replace(options.shape, every=1)
        self.encoding = options.encoding
        self.first_tick: int | None = None
        self.last_tick: int | None = None

    @property
    def stop(self) -> int:
        """One past the last index in range among the frames that exist now."""
        return self.store.index_at_or_after(self.to_tick + 1)

    @property
    def done(self) -> bool:
        if self.next < self.stop:
            return False
        store = self.store
        return store.complete or (store.frame_count > 0 and store.ticks[-1] >= self.to_tick)

    def add_credit(self, frames: int) -> None:
        if frames < 1:
            raise protocol.ProtocolError("bad_field", "credit must be at least 1 frame")
        self.credit += frames

    def next_message(self) -> bytes | None:
        """The next chunk if credit allows, else None."""
        parts = self.next_parts()
        return None if parts is None else b"".join(parts)

    def next_parts(self) -> list[bytes] | None:
        """The next chunk as parts whose concatenation is the message (a plain chunk's envelope
        and its frames apart, so a writer can send them without joining them), else None."""
        count = min(self.stop - self.next, self.credit, CHUNK_FRAMES)
        if count <= 0:
            return None
        start = self.next
        count = self.store.frames_within(start, count, CHUNK_BYTES)
        data = self.store.frames_bytes(start, start + count)
        self.next += count
        self.credit -= count
        self.sent += count
        self.on_frames(count)
        if self.first_tick is None:
            self.first_tick = int(self.store.ticks[start])
        self.last_tick = int(self.store.ticks[start + count - 1])
        frames, _ = shape_frames(data, count, self.shape, start)
        fields = {"stream": self.id, "seq": start, "fetch": self.request_id}
        if self.encoding is None:  # the frames come last in a plain envelope
            return [encode_ticks(fields, count, b"", None), frames]
        return [encode_ticks(fields, count, frames, self.encoding, FETCH_DEFLATE_LEVEL)]

    def end_message(self) -> bytes:
        return protocol.pack(
            {
                "type": "fetch_end",
                "stream": self.id,
                "fetch": self.request_id,
                "count": self.sent,
                "first_tick": self.first_tick,
                "last_tick": self.last_tick,
            }
        )
