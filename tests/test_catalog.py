"""The recordings folder as the server sees it: every hostile file refused, the scan goes on."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os

import msgpack
import pytest
import zstandard
from conftest import tiny_frames
from test_recording_hostile import MiB, _zeros_frame, craft, frames_of, good_meta, valid

from processing.recording import Recording, write_recording
from processing.source import SourceInfo
from server import catalog as catalog_module
from server.catalog import Catalog

INFO = SourceInfo("de_mirage", 64, "t.dem", "0" * 64, "test")


def hostile_files(folder, outside) -> set[str]:
    """Write one file per finding into ``folder``; returns their names."""
    frame = msgpack.packb({"tick": 100, "players": []})
    files = {
        "metadata-only.eeict": craft(
            {"frames_per_chunk": 1, "frame_count": 1},
            [zstandard.ZstdCompressor().compress(frame)], [len(frame)],
        ),
        "bytes-teams.eeict": valid(teams={b"t": b"A"}),
        "tickrate-0.eeict": valid(tickrate=0),
        "tickrate-nan.eeict": valid(tickrate=math.nan),
        "empty.eeict": b"",
    }  # fmt: skip
    raw, lengths = frames_of(3)
    files["chunk-2-27.eeict"] = craft(
        good_meta(3, 2**27), [zstandard.ZstdCompressor().compress(raw)], lengths
    )
    raw, lengths = frames_of(10)
    chunk = zstandard.ZstdCompressor().compress(raw)
    files["index-bomb.eeict"] = craft(
        good_meta(10, 10), [chunk], lengths, index=_zeros_frame(256 * MiB, declare=True)
    )
    files["chunks-64mib.eeict"] = craft(
        good_meta(64 * 16, 64), [_zeros_frame(64 * MiB, declare=True)] * 16, [MiB] * 64 * 16
    )
    files["abc\n.eeict"] = valid()  # a valid file whose name would make the id "abc\n"
    files["-dash.eeict"] = valid()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    os.mkfifo(folder / "fifo.eeict")
    (folder / "dir.eeict").mkdir()
    write_recording(outside / "elsewhere.eeict", INFO, tiny_frames(10))
    (folder / "link.eeict").symlink_to(outside / "elsewhere.eeict")
    return {*files, "fifo.eeict", "dir.eeict", "link.eeict"}


@pytest.fixture
def folders(tmp_path):
    folder, outside = tmp_path / "recordings", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    return folder, outside


@pytest.mark.timeout(60)
def test_a_scan_refuses_every_hostile_file_and_keeps_the_good_one(folders):
    folder, outside = folders
    bad = hostile_files(folder, outside)
    write_recording(folder / "good.eeict", INFO, tiny_frames(100))
    catalog = Catalog(folder)
    catalog.scan()
    assert set(catalog.entries) == {"good"}
    assert set(catalog.refused) == bad
    assert "symbolic link" in catalog.refused["link.eeict"]
    assert "not a regular file" in catalog.refused["fifo.eeict"]
    assert "letters, digits" in catalog.refused["abc\n.eeict"]
    described = json.loads(json.dumps(catalog.describe()))  # what /recordings answers
    assert [r["id"] for r in described["recordings"]] == ["good"]
    assert len(described["refused"]) == len(bad)


def test_refused_files_are_not_reopened_until_they_change(folders, monkeypatch):
    folder, outside = folders
    bad = hostile_files(folder, outside)
    opened: list[str] = []
    real_open = Recording.open

    def counting_open(path):
        opened.append(path.name)
        return real_open(path)

    monkeypatch.setattr(catalog_module.Recording, "open", counting_open)
    catalog = Catalog(folder)
    catalog.scan()
    first = sorted(opened)
    assert set(first) <= bad and "index-bomb.eeict" in first
    opened.clear()
    catalog.scan()
    catalog.scan()
    assert opened == []  # the bombs went off once, not on every scan
    assert set(catalog.refused) == bad
    (folder / "index-bomb.eeict").write_bytes(valid())  # fixed by its owner
    catalog.scan()
    assert opened == ["index-bomb.eeict"]
    assert "index-bomb" in catalog.entries


def test_one_file_failing_in_an_unexpected_way_refuses_only_that_file(folders, monkeypatch):
    folder, _ = folders
    for name in ("a", "b", "c"):
        write_recording(folder / f"{name}.eeict", INFO, tiny_frames(10))
    real_open = Recording.open

    def open_with_a_bug(path):  # stands in for a bug a crafted file could reach
        if path.name == "b.eeict":
            raise IndexError("a bug")
        return real_open(path)

    monkeypatch.setattr(catalog_module.Recording, "open", open_with_a_bug)
    catalog = Catalog(folder)
    catalog.scan()
    assert set(catalog.entries) == {"a", "c"}
    assert catalog.refused == {"b.eeict": "unexpected error while opening (IndexError)"}


def test_a_file_replaced_or_overwritten_is_reopened(folders):
    folder, _ = folders
    path = folder / "m.eeict"
    write_recording(path, INFO, tiny_frames(100))
    catalog = Catalog(folder)
    catalog.scan()
    old = catalog.get("m").recording
    with open(path, "wb") as out:  # overwritten in place, as cp does
        out.write(_recording_bytes(folders, 300))
    catalog.scan()
    assert catalog.get("m").recording.frame_count == 300
    assert old.frame_count == 100  # the old view still exists for sessions that hold it


def _recording_bytes(folders, count: int) -> bytes:
    _, outside = folders
    write_recording(outside / "new.eeict", INFO, tiny_frames(count))
    return (outside / "new.eeict").read_bytes()


def test_untrusted_names_are_logged_with_repr(folders, caplog):
    folder, _ = folders
    (folder / "evil\nINFO forged line.eeict").write_bytes(valid())
    (folder / "nl.eeict").write_bytes(valid(map="de_dust2\nforged"))
    with caplog.at_level(logging.INFO, logger="server.catalog"):
        Catalog(folder).scan()
    messages = [record.getMessage() for record in caplog.records]
    assert messages and all("\n" not in message for message in messages)
    assert any("'evil\\nINFO forged line.eeict'" in message for message in messages)
    assert any("'de_dust2\\nforged'" in message for message in messages)


def test_ids_must_match_in_full():
    assert catalog_module.RECORDING_ID.fullmatch("match-1.final_2")
    for bad in ("abc\n", "abc\n.x", ".hidden", "a/b", "a" * 129, ""):
        assert not catalog_module.RECORDING_ID.fullmatch(bad)


def test_the_download_checksum_is_of_the_whole_file(folders):
    folder, _ = folders
    frames = tiny_frames(3000)
    write_recording(folder / "m.eeict", INFO, frames)
    catalog = Catalog(folder)
    catalog.scan()
    expected = hashlib.sha256((folder / "m.eeict").read_bytes()).hexdigest()
    entry = catalog.get("m")
    assert entry.sha256() == expected
    assert b"".join(entry.recording.iter_raw(block=1000)) == (folder / "m.eeict").read_bytes()


def test_the_log_says_whether_a_file_was_replaced_removed_or_refused(folders, caplog):
    folder, _ = folders
    for name in ("kept", "gone", "spoiled"):
        write_recording(folder / f"{name}.eeict", INFO, tiny_frames(10))
    catalog = Catalog(folder)
    catalog.scan()
    (folder / "kept.eeict").write_bytes(_recording_bytes(folders, 20))  # a valid new version
    (folder / "gone.eeict").unlink()
    (folder / "spoiled.eeict").write_bytes(b"\0" * 100)
    with caplog.at_level(logging.INFO, logger="server.catalog"):
        catalog.scan()
    messages = [record.getMessage() for record in caplog.records]
    assert any("'kept' (its file was replaced)" in m and "20 frames" in m for m in messages)
    assert "recording 'gone' withdrawn: its file was removed or renamed" in messages
    assert "recording 'spoiled' withdrawn: its file was changed and is now refused" in messages
    assert not any("'spoiled'" in m and "removed" in m for m in messages)


def test_one_entry_that_cannot_be_listed_never_breaks_the_catalog(folders, caplog):
    folder, outside = folders
    write_recording(folder / "b.eeict", INFO, tiny_frames(10))
    write_recording(outside / "a.eeict", INFO, tiny_frames(10))
    catalog = Catalog(folder)
    catalog.scan()
    recording = Recording.open(outside / "a.eeict")
    recording.meta["teams"] = {"t": b"bytes"}  # what validation at open keeps out
    catalog.add_builtin("a", recording, outside / "a.eeict")
    with caplog.at_level(logging.ERROR, logger="server.catalog"):
        for _ in range(3):
            described = json.loads(json.dumps(catalog.describe()))
    assert [r["id"] for r in described["recordings"]] == ["b"]
    assert described["refused"] == [{"file": "a.eeict", "reason": "cannot be listed (TypeError)"}]
    assert len(caplog.records) == 1  # logged once, not per answer
