"""The restored copy demoparser2 reads: only string table frames change, and they carry the
demo's own entries (processing/demo/stringtables.py)."""

from __future__ import annotations

import mmap
import random
import shutil
import tempfile
from pathlib import Path

import pytest
from conftest import DEMOS

from processing.demo import DemoError, read_demo, wire
from processing.demo.stringtables import TABLES, restore_string_tables

CREATE = 44


def frames_of(path: Path) -> list[tuple[wire.Frame, bytes]]:
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return [(frame, wire.frame_body(data, frame)) for frame in wire.frames(data)]


def created_names(packet: bytes) -> list[str]:
    """The table names of a packet's svc_CreateStringTable messages."""
    creates = wire.packet_messages(packet, frozenset({CREATE}))
    return [dict(wire.fields(message))[1].decode() for _, message in creates]


def created_tables(packet: bytes) -> list[tuple[str, dict[bytes, bytes]]]:
    """(name, entries) of each table a restored packet creates, its entries read as written
    there (each at the next index, its key in full, its value sized in bytes)."""
    out = []
    for _, message in wire.packet_messages(packet, frozenset({CREATE})):
        f = dict(wire.fields(message))
        bits = wire.BitReader(f.get(7, b""))
        entries = {}
        for _ in range(f.get(2, 0)):
            assert bits.flag(), "entries are written in order"
            assert bits.flag() and not bits.flag(), "every key in full"
            key = bits.string()
            value = bits.bytes(bits.ubitvar()) if bits.flag() else b""
            entries[key] = value
        out.append((f[1].decode(), entries))
    return out


def snapshot(body: bytes) -> dict[str, dict[bytes, bytes]]:
    tables = {}
    for _, table in wire.fields(body):
        f = list(wire.fields(table))
        name = next(v for n, v in f if n == 1).decode()
        items = [dict(wire.fields(v)) for n, v in f if n == 2]
        tables[name] = {item.get(1, b""): item.get(2, b"") for item in items}
    return tables


@pytest.mark.parametrize("name", DEMOS)
def test_only_string_table_frames_change(name, demos_dir, tmp_path):
    original = demos_dir / f"{name}.dem"
    restored = restore_string_tables(original, tmp_path)
    assert restored != original and restored.parent == tmp_path
    before, after = frames_of(original), frames_of(restored)
    old_signon = {body for f, body in before if f.command == wire.DEM_SIGNON_PACKET}

    def added(frame: wire.Frame, body: bytes) -> bool:
        return frame.command == wire.DEM_SIGNON_PACKET and body not in old_signon

    kept = [(f.command, f.tick, body) for f, body in before if f.command != wire.DEM_STRING_TABLES]
    assert [(f.command, f.tick, body) for f, body in after if not added(f, body)] == kept
    replaced = sum(f.command in (wire.DEM_STRING_TABLES, wire.DEM_FULL_PACKET) for f, _ in before)
    assert sum(added(f, body) for f, body in after) == replaced
    # The header's offsets still point at the same frames (the file info near the end).
    old, new = original.read_bytes(), restored.read_bytes()
    for at in (8, 12):
        a, b = (int.from_bytes(data[at : at + 4], "little") for data in (old, new))
        assert old[a : a + 64] == new[b : b + 64]


@pytest.mark.parametrize("name", DEMOS)
def test_the_tables_carry_the_frames_own_entries(name, demos_dir, tmp_path):
    """A DEM_StringTables frame becomes a signon packet that creates demoparser2's two tables
    with exactly that frame's entries; after a full packet the game's tables are created
    again, empty, in the game's order."""
    before = frames_of(demos_dir / f"{name}.dem")
    after = frames_of(restore_string_tables(demos_dir / f"{name}.dem", tmp_path))
    snapshots = [snapshot(body) for f, body in before if f.command == wire.DEM_STRING_TABLES]
    game_order = [
        name for f, body in before if f.command == wire.DEM_SIGNON_PACKET
        for name in created_names(body)
    ]  # fmt: skip
    restored, again = [], []
    old = [body for f, body in before if f.command == wire.DEM_SIGNON_PACKET]
    for frame, body in after:
        if frame.command != wire.DEM_SIGNON_PACKET or body in old:
            continue
        names = created_names(body)
        if set(names) <= TABLES:
            restored.append(dict(created_tables(body)))
        else:
            again.append(names)
            assert all(not entries for _, entries in created_tables(body))
    assert len(restored) == len(snapshots) >= 1
    for ours, theirs in zip(restored, snapshots, strict=True):
        assert ours == {k: v for k, v in theirs.items() if k in TABLES and v}
        assert set(ours) <= TABLES
    full_packets = sum(f.command == wire.DEM_FULL_PACKET for f, _ in before)
    assert len(again) == full_packets
    assert all(names == game_order for names in again)


def test_a_demo_with_nothing_to_restore_is_read_as_it_is(tmp_path):
    demo = tmp_path / "bare.dem"
    stop = wire.encode_frame(wire.DEM_STOP, 0, b"")
    demo.write_bytes(b"PBDEMS2\x00" + (16).to_bytes(4, "little") * 2 + stop)
    assert restore_string_tables(demo, tmp_path / "out") == demo


@pytest.fixture
def scratch(tmp_path, monkeypatch) -> Path:
    """The folder restored copies are written in (TMPDIR) for this test."""
    folder = tmp_path / "scratch"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_the_restored_copy_is_read_then_removed(demos_dir, scratch):
    """random_1 has its baselines only in a DEM_StringTables frame: the weapons in hand are
    named from the restored copy, and no copy is left behind."""
    players = [p for f in read_demo(demos_dir / "random_1.dem").frames for p in f["players"]]
    named = sum(bool(p["actv_itm"]) for p in players)
    assert named > 0.99 * len(players)
    assert not list(scratch.iterdir())


def test_corrupt_string_tables_are_a_clear_error(demos_dir, tmp_path, scratch):
    demo = tmp_path / "nade.dem"
    shutil.copy(demos_dir / "nade.dem", demo)
    data = bytearray(demo.read_bytes())
    frame = next(f for f, _ in frames_of(demo) if f.command == wire.DEM_STRING_TABLES)
    data[frame.body : frame.body + 5] = b"\xff\xff\xff\xff\x0f"  # a 4 GiB snappy block
    demo.write_bytes(bytes(data))
    with pytest.raises(DemoError, match=r"nade\.dem: its frames are corrupt"):
        read_demo(demo)
    assert not list(scratch.iterdir()), "the restored copy's folder is removed"


def test_bits_round_trip():
    rng = random.Random(7)
    writer, wanted = wire.BitWriter(), []
    for _ in range(2000):
        kind = rng.choice(("flag", "ubitvar", "bits", "bytes"))
        if kind == "flag":
            value = rng.random() < 0.5
            writer.flag(value)
        elif kind == "ubitvar":
            value = rng.choice((rng.randrange(16), rng.randrange(4096), rng.randrange(1 << 30)))
            writer.ubitvar(value)
        elif kind == "bits":
            n = rng.randrange(1, 33)
            value = (n, rng.getrandbits(n))
            writer.put(value[1], n)
        else:
            value = rng.randbytes(rng.randrange(0, 40))
            writer.bytes(value)
        wanted.append((kind, value))
    reader = wire.BitReader(writer.getvalue())
    for kind, value in wanted:
        if kind == "flag":
            assert reader.flag() == value
        elif kind == "ubitvar":
            assert reader.ubitvar() == value
        elif kind == "bits":
            assert reader.read(value[0]) == value[1]
        else:
            assert reader.bytes(len(value)) == value
    with pytest.raises(wire.WireError):
        reader.read(16)


def test_protobuf_and_varints_round_trip():
    message = wire.int_field(1, 300) + wire.bytes_field(7, b"abc") + wire.int_field(2, 0)
    assert list(wire.fields(message)) == [(1, 300), (7, b"abc"), (2, 0)]
    for value in (0, 1, 127, 128, 2**35, 2**63 - 1):
        assert wire.varint(wire.encode_varint(value), 0) == (value, len(wire.encode_varint(value)))
    with pytest.raises(wire.WireError):
        list(wire.fields(wire.encode_varint(7 << 3 | 2) + wire.encode_varint(10) + b"short"))


def _demo(tmp_path: Path, frames: list[bytes], info_at: int | None = None) -> Path:
    """A demo file of ``frames``; the header's file info offset is frame ``info_at``'s start."""
    starts, at = [], 16
    for frame in frames:
        starts.append(at)
        at += len(frame)
    info = starts[info_at] if info_at is not None else 0
    path = tmp_path / "made.dem"
    path.write_bytes(b"PBDEMS2\x00" + info.to_bytes(4, "little") * 2 + b"".join(frames))
    return path


def _signon(names: list[str]) -> bytes:
    creates = [(CREATE, wire.bytes_field(1, name.encode())) for name in names]
    return wire.encode_frame(wire.DEM_SIGNON_PACKET, 0, wire.encode_packet(creates))


def test_a_crafted_demo_cannot_make_a_huge_copy(tmp_path):
    """Each full packet is followed by the game's tables again; a small file of many tables
    and thousands of empty full packets would make a copy hundreds of times its size."""
    full = wire.encode_frame(wire.DEM_FULL_PACKET, 1, b"")
    frames = [_signon([f"table{i}" for i in range(200)]), *[full] * 20_000]
    demo = _demo(tmp_path, [*frames, wire.encode_frame(wire.DEM_STOP, 2, b"")])
    with pytest.raises(wire.WireError, match="more string table frames"):
        restore_string_tables(demo, tmp_path)
    assert not (tmp_path / "out").exists()


def test_the_header_follows_a_frame_that_moved(tmp_path):
    """A signon packet inserted right before the frame the header points at moves that frame:
    the header must point at it still."""
    full = wire.encode_frame(wire.DEM_FULL_PACKET, 1, b"")
    info = wire.encode_frame(2, 3, b"file info")  # DEM_FileInfo
    stop = wire.encode_frame(wire.DEM_STOP, 3, b"")
    demo = _demo(tmp_path, [_signon(["instancebaseline"]), full, info, stop], info_at=2)
    out = tmp_path / "out"
    out.mkdir()
    restored = restore_string_tables(demo, out).read_bytes()
    offset = int.from_bytes(restored[8:12], "little")
    assert restored[offset : offset + len(info)] == info
