"""Give demoparser2 the string tables it would otherwise miss, in messages it reads.

demoparser2 (0.42) learns the ``instancebaseline`` and ``userinfo`` tables from
svc_CreateStringTable and svc_UpdateStringTable messages, and loses them in two places:

- A demo recorded from a player's own client starts mid-game: its signon creates the tables
  empty and their entries follow in one DEM_StringTables frame, which demoparser2 skips.
- After a DEM_FullPacket (GOTV demos have them) it empties its list of tables and keeps it
  empty, so every later update, which names its table by the game's table id, finds no table:
  a class first seen after it (a grenade's projectile the first time one is thrown, a gun
  first bought) never gets its baseline.

Without a class's baseline every prop whose value equals the baseline is never set: the weapons'
item definition index (no weapon names, inventories missing most guns), a pawn's position cell
(one axis NaN until the player crosses a cell), health, armour, a projectile's owner (the
grenade is dropped). docs/frame-fields.md has the measured effect.

``restore_string_tables`` writes a copy of the demo in which each DEM_StringTables frame is a
signon packet creating those two tables with the frame's entries, and each DEM_FullPacket is
followed by a signon packet creating the game's tables again, empty and in the game's order,
so that table ids line up and demoparser2 applies the updates itself. The data is the demo's
own; nothing else in the file changes.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterator
from pathlib import Path

from processing.demo import wire

TABLES = frozenset({"instancebaseline", "userinfo"})  # the tables demoparser2 reads
_CREATE, _CLEAR_ALL = 44, 51  # svc_CreateStringTable, svc_ClearAllStringTables
_TABLE_MESSAGES = frozenset({_CREATE, _CLEAR_ALL})
# Packets that create tables: the signon's, and the one inside a full packet.
_CREATING = {wire.DEM_SIGNON_PACKET, wire.DEM_FULL_PACKET}
_READ = frozenset({wire.DEM_STRING_TABLES, *_CREATING})

_ADDED_FLOOR = 1 << 20  # what a restored copy may add beyond the demo's own size
Entries = list[tuple[bytes, bytes]]  # (key, value)
Edit = tuple[int, int, bytes]  # replace bytes [start, end) of the file (start == end: insert)


def restore_string_tables(path: Path, workdir: Path) -> Path:
    """``path`` itself when demoparser2 misses nothing in it, else the restored copy, written
    in ``workdir``. Raises wire.WireError on a demo whose frames cannot be read, or that would
    need more added than the demo's own size (real ones add a few hundred KiB at most: a crafted
    file of tiny full packets must not make a copy a thousand times its size)."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        edits, added = [], 0
        for edit in _edits(data):
            added += len(edit[2])
            if added > len(data) + _ADDED_FLOOR:
                raise wire.WireError("more string table frames than any demo has")
            edits.append(edit)
        if not edits:
            return path
        out = workdir / path.name
        _write_copy(data, edits, out)
    return out


def _edits(data: mmap.mmap) -> Iterator[Edit]:
    created: list[bytes] = []  # the game's create messages, by table id
    unread: list[wire.Frame] = []  # packets that may create tables, read at a full packet
    again: tuple[int, list[bytes]] | None = None  # the re-creates, for that many tables
    for frame in wire.frames(data, _READ):
        if frame.command == wire.DEM_STRING_TABLES:
            snapshot = _snapshot(wire.frame_body(data, frame))
            messages = [
                _create(name, entries) for name, entries in snapshot.items() if name in TABLES
            ]
            if messages:
                yield frame.start, frame.end, _signon_frame(frame.tick, messages)
        elif frame.command in _CREATING:
            unread.append(frame)
        if frame.command == wire.DEM_FULL_PACKET:
            for packet in unread:
                _follow_tables(data, packet, created)
            unread.clear()
            if created:
                if again is None or again[0] != len(created):  # tables are only ever added
                    again = (len(created), [_emptied(message) for message in created])
                yield frame.end, frame.end, _signon_frame(frame.tick, again[1])


def _follow_tables(data: mmap.mmap, frame: wire.Frame, created: list[bytes]) -> None:
    """Keep ``created`` (the game's tables by id) up to date with a packet's messages."""
    body = wire.frame_body(data, frame)
    if frame.command == wire.DEM_FULL_PACKET:  # CDemoFullPacket: packet = 2
        body = next((v for n, v in wire.fields(body) if n == 2 and isinstance(v, bytes)), b"")
    for kind, message in wire.packet_messages(body, _TABLE_MESSAGES):
        if kind == _CREATE:
            created.append(message)
        else:
            created.clear()


def _emptied(create: bytes) -> bytes:
    """A create message for the same table (name, sizes, flags) with no entries."""
    kept = b"".join(
        wire.bytes_field(n, v) if isinstance(v, bytes) else wire.int_field(n, v)
        for n, v in wire.fields(create)
        if n not in (2, 7, 8, 9)  # num_entries, string_data, uncompressed_size, data_compressed
    )
    return kept + wire.int_field(2, 0) + wire.bytes_field(7, b"") + wire.int_field(9, 0)


def _snapshot(payload: bytes) -> dict[str, Entries]:
    """CDemoStringTables: table name -> entries (table_t = 1: name = 1, items = 2 with
    str = 1 and data = 2)."""
    tables: dict[str, Entries] = {}
    for number, table in wire.fields(payload):
        if number != 1 or not isinstance(table, bytes):
            continue
        name, entries = "", []
        for field, value in wire.fields(table):
            if field == 1 and isinstance(value, bytes):
                name = value.decode("utf-8", "replace")
            elif field == 2 and isinstance(value, bytes):
                item = {k: v for k, v in wire.fields(value) if isinstance(v, bytes)}
                entries.append((item.get(1, b""), item.get(2, b"")))
        tables[name] = entries
    return tables


def _create(name: str, entries: Entries) -> bytes:
    """CSVCMsg_CreateStringTable with every entry keyed in full (no key history), values
    sized with varint byte counts, uncompressed."""
    bits = wire.BitWriter()
    for key, value in entries:
        bits.flag(True)  # the next index
        bits.flag(True)  # has a key
        bits.flag(False)  # not from the key history
        bits.bytes(key + b"\0")
        bits.flag(bool(value))
        if value:
            bits.ubitvar(len(value))
            bits.bytes(value)
    return (
        wire.bytes_field(1, name.encode())  # name
        + wire.int_field(2, len(entries))  # num_entries
        + wire.int_field(3, 0)  # user_data_fixed_size
        + wire.int_field(4, 0)  # user_data_size
        + wire.int_field(6, 0)  # flags
        + wire.bytes_field(7, bits.getvalue())  # string_data
        + wire.int_field(9, 0)  # data_compressed
        + wire.int_field(10, 1)  # using_varint_bitcounts
    )


def _signon_frame(tick: int, creates: list[bytes]) -> bytes:
    messages = [(_CREATE, create) for create in creates]
    return wire.encode_frame(wire.DEM_SIGNON_PACKET, tick, wire.encode_packet(messages))


def _write_copy(data: mmap.mmap, edits: list[Edit], out: Path) -> None:
    """The file with the edits made; the header's two offsets move with the bytes."""
    info, spawn = struct.unpack_from("<ii", data, 8)

    def moved(offset: int) -> int:  # an edit wholly before the offset moves it
        return offset + sum(len(new) - (end - start) for start, end, new in edits if end <= offset)

    view = memoryview(data)
    try:
        with open(out, "wb") as f:
            f.write(bytes(data[:8]) + struct.pack("<ii", moved(info), moved(spawn)))
            at = wire.HEADER_SIZE
            for start, end, new in edits:
                f.write(view[at:start])
                f.write(new)
                at = end
            f.write(view[at:])
    finally:
        view.release()
