"""Compressed and shaped ``ticks`` messages: what a connection asked for, and the bytes for it.

A client picks, when its socket opens, an encoding (``?encoding=deflate``), a subset of fields
(``&fields=...``) and every Nth frame (``&every=N``). Many clients ask for the same thing, so a
message is built once per (frames, shape, encoding) and the same bytes go to all of them:
``BurstCache`` holds those. Nothing here touches a socket or an event loop. Rules for clients:
docs/protocol.md, "Compressed and shaped tick messages".
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from processing.frames import FRAME_FIELDS, PLAYER_FIELDS
from server import protocol

DEFLATE = "deflate"
ENCODINGS = (DEFLATE,)  # "none" (or no parameter) means today's plain messages
# A live burst is compressed once for all its subscribers: level 6 (8 frames 11-14x smaller in
# 0.15-0.3 ms). A fetch message is compressed for one client: level 1 (256 frames 18-24x in 1-3 ms,
# a third of level 6's cost). Numbers: bench/bench_codecs.py, docs/protocol.md.
DEFLATE_LEVEL = 6
FETCH_DEFLATE_LEVEL = 1
MAX_EVERY = 64  # one frame a second at 64 Hz
MAX_FIELDS_TEXT = 2048  # the whole field list, characters
PLAYER_PREFIX = "players."
ALWAYS_FRAME = "tick"  # every shaped frame keeps its tick: clients place frames by it
ALWAYS_PLAYER = "sid"  # every shaped player keeps its steam id: clients tell players apart by it


class OptionError(protocol.ProtocolError):
    """A connection option (URL query parameter) we refuse; the client should fix its URL."""

    def __init__(self, message: str) -> None:
        super().__init__("bad_option", message)


@dataclass(frozen=True)
class Shape:
    """Which fields of each frame a client gets, and which frames (every Nth seq).

    ``frame_fields`` None means every frame field; ``player_fields`` None means whole players
    (when ``players`` is kept at all). Canonical: equal requests give equal shapes, so they share
    cached messages.
    """

    frame_fields: frozenset[str] | None = None
    player_fields: frozenset[str] | None = None
    every: int = 1

    @property
    def full(self) -> bool:
        """True when frames pass unchanged (no decode, no re-encode)."""
        return self.frame_fields is None and self.player_fields is None and self.every == 1

    def keeps(self, seq: int) -> bool:
        return seq % self.every == 0


FULL = Shape()


@dataclass(frozen=True)
class ConnectionOptions:
    """What a connection asked for in its URL: the encoding of ``ticks`` and their shape."""

    encoding: str | None = None  # None: plain ``frames`` arrays, as for clients that never ask
    shape: Shape = FULL

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> ConnectionOptions:
        """Options from the URL query (other parameters, e.g. ``token``, are ignored).

        Raises OptionError naming the bad parameter and what is allowed.
        """
        encoding = _parse_encoding(query.get("encoding"))
        every = _parse_every(query.get("every"))
        frame_fields, player_fields = _parse_fields(query.get("fields"))
        if frame_fields is not None and frame_fields >= set(FRAME_FIELDS):
            frame_fields = None  # asked for everything: share the full messages
        return cls(encoding, Shape(frame_fields, player_fields, every))


PLAIN = ConnectionOptions()  # what a client that asks for nothing gets: today's messages


def _parse_encoding(value: str | None) -> str | None:
    if value is None or value in ("", "none"):
        return None
    if value not in ENCODINGS:
        raise OptionError(f"encoding={value!r} is not supported; use encoding=deflate or none")
    return value


def _parse_every(value: str | None) -> int:
    if value is None or value == "":
        return 1
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_EVERY:
        raise OptionError(f"every={value!r}: give a whole number of frames from 1 to {MAX_EVERY}")
    return int(value)


def _parse_fields(value: str | None) -> tuple[frozenset[str] | None, frozenset[str] | None]:
    """(frame fields, player fields) from ``tick,players.x,players.y,bomb``."""
    if value is None:
        return None, None
    if len(value) > MAX_FIELDS_TEXT:
        raise OptionError(f"fields= is {len(value)} characters; the limit is {MAX_FIELDS_TEXT}")
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise OptionError("fields= is empty; name at least one field, or leave it out for all")
    frame_fields, player_fields = {ALWAYS_FRAME}, set()
    whole_players = False
    for name in names:
        if name.startswith(PLAYER_PREFIX):
            field = name[len(PLAYER_PREFIX) :]
            if field not in PLAYER_FIELDS:
                raise OptionError(
                    f"fields: unknown player field {field!r}; player fields are "
                    + ", ".join(PLAYER_FIELDS)
                )
            player_fields.add(field)
        elif name in FRAME_FIELDS:
            frame_fields.add(name)
            whole_players |= name == "players"
        else:
            raise OptionError(
                f"fields: unknown field {name!r}; frame fields are {', '.join(FRAME_FIELDS)}, "
                f"player fields are written {PLAYER_PREFIX}<name> (e.g. {PLAYER_PREFIX}x)"
            )
    if whole_players or not player_fields:
        return frozenset(frame_fields), None
    frame_fields.add("players")
    player_fields.add(ALWAYS_PLAYER)
    if player_fields >= set(PLAYER_FIELDS):
        return frozenset(frame_fields), None
    return frozenset(frame_fields), frozenset(player_fields)


# -- building messages ------------------------------------------------------------------------


def shape_frames(frames: bytes, count: int, shape: Shape, first_seq: int = 0) -> tuple[bytes, int]:
    """Keep ``shape``'s fields of frames whose seq is a multiple of ``shape.every``.

    ``frames`` holds ``count`` msgpack frames back to back; frame ``i`` has seq
    ``first_seq + i``. Returns the kept frames re-encoded back to back, and how many there are.
    The first kept seq is ``first_kept(first_seq, shape.every)``.
    """
    if shape.full:
        return frames, count
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    unpacker.feed(frames)
    packer = msgpack.Packer()
    parts = []
    for i in range(count):
        if not shape.keeps(first_seq + i):
            unpacker.skip()
            continue
        parts.append(packer.pack(_shape_frame(unpacker.unpack(), shape)))
    return b"".join(parts), len(parts)


def first_kept(first_seq: int, every: int) -> int:
    """The first seq at or after ``first_seq`` that a shape with ``every`` keeps."""
    return first_seq + (-first_seq % every)


def _shape_frame(frame: dict[str, Any], shape: Shape) -> dict[str, Any]:
    if shape.frame_fields is not None:
        frame = {key: value for key, value in frame.items() if key in shape.frame_fields}
    keep = shape.player_fields
    players = frame.get("players")
    if keep is not None and players is not None:
        frame["players"] = [{k: v for k, v in p.items() if k in keep} for p in players]
    return frame


_packer = msgpack.Packer()


def deflate(data: bytes, level: int = DEFLATE_LEVEL) -> bytes:
    """Raw DEFLATE (RFC 1951, no zlib or gzip header): what every client platform inflates."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


def encode_ticks(
    fields: Mapping[str, Any],
    count: int,
    frames: bytes,
    encoding: str | None,
    level: int = DEFLATE_LEVEL,
) -> bytes:
    """A ``ticks`` message of ``count`` encoded frames.

    ``fields`` are the envelope's fields: ``stream`` and ``seq`` first, then extras (``gen``,
    ``fetch``, ``every``) in order. Plain: today's envelope (``frames`` array last). Deflate:
    type, stream, seq, count, extras, ``encoding``, then ``data`` (raw DEFLATE of one msgpack
    array of the frames), so counting clients read seq and count without inflating. ``level``:
    DEFLATE_LEVEL for shared live bursts, FETCH_DEFLATE_LEVEL for one client's fetch.
    """
    extra = {key: value for key, value in fields.items() if key not in ("stream", "seq")}
    if encoding is None:
        return protocol.ticks_envelope(fields["stream"], fields["seq"], count, frames, **extra)
    if encoding != DEFLATE:
        raise ValueError(f"unknown encoding {encoding!r}")
    data = deflate(_packer.pack_array_header(count) + frames, level)
    message = {"type": "ticks", "stream": fields["stream"], "seq": fields["seq"], "count": count}
    message.update(extra)
    message["encoding"] = encoding
    message["data"] = data
    return protocol.pack(message)


def decode_ticks(message: Mapping[str, Any]) -> list[Any]:
    """The frames of a decoded ``ticks`` message, plain or compressed (for tests and tools)."""
    if "frames" in message:
        return list(message["frames"])
    if message.get("encoding") != DEFLATE:
        raise ValueError(f"unknown ticks encoding {message.get('encoding')!r}")
    frames = msgpack.unpackb(zlib.decompress(message["data"], wbits=-15))
    if len(frames) != message["count"]:
        raise ValueError(f"count says {message['count']} frames, data holds {len(frames)}")
    return frames


class BurstCache:
    """The last messages built, by key (start, stop, shape, encoding), least recently used out.

    Bounded by entries and by bytes, so a stream with many distinct shapes cannot grow memory;
    a message larger than the byte bound is built and returned but not kept.
    """

    def __init__(self, max_entries: int = 256, max_bytes: int = 32 * 1024 * 1024) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("a cache needs room for at least one entry and one byte")
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._entries: OrderedDict[Hashable, bytes] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def get(self, key: Hashable, build: Callable[[], bytes]) -> bytes:
        """The message for ``key``, calling ``build()`` only when it is not cached."""
        data = self._entries.get(key)
        if data is not None:
            self._entries.move_to_end(key)
            self.hits += 1
            return data
        self.misses += 1
        data = build()
        if len(data) <= self.max_bytes:
            self._entries[key] = data
            self.bytes += len(data)
            while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self.bytes -= len(dropped)
        return data
