"""The recording file: exact round trips, refusal of damaged files, atomic writes."""

from __future__ import annotations

import contextlib
import gc
import os
import random
import struct
from pathlib import Path

import pytest
from conftest import tiny_frames

from processing.recording import Recording, RecordingError, write_recording
from processing.source import SourceInfo

INFO = SourceInfo("de_mirage", 64, "t.dem", "0" * 64, "test")
FOOTER = struct.Struct("<QQQQIQ8s")


@pytest.fixture
def written(tmp_path):
    frames = tiny_frames(1000, step=3)
    path = tmp_path / "t.eeict"
    meta = write_recording(path, INFO, frames)
    return path, frames, meta


def test_random_ranges_read_back_exactly(written):
    path, frames, meta = written
    recording = Recording.open(path)
    assert meta["frame_count"] == recording.frame_count == 1000
    assert list(recording.ticks) == [f["tick"] for f in frames]
    rng = random.Random(2)
    for _ in range(300):
        a = rng.randrange(1000)
        b = rng.randrange(a, 1001)
        assert recording.frames(a, b) == frames[a:b]
    assert recording.index_at_or_after(frames[10]["tick"] + 1) == 11


@pytest.mark.parametrize("keep", [0, 10, 16, 100, 1000, -60, -52, -1])
def test_truncated_files_are_refused_naming_the_file(written, tmp_path, keep):
    path, _, _ = written
    data = path.read_bytes()
    cut = tmp_path / "cut.eeict"
    cut.write_bytes(data[:keep])  # a negative keep drops that many bytes from the end
    with pytest.raises(RecordingError, match=r"cut\.eeict"):
        Recording.open(cut)


def test_damaged_metadata_index_or_footer_is_refused(written, tmp_path):
    path, _, _ = written
    data = path.read_bytes()
    meta_off, _, index_off, index_len, *_ = FOOTER.unpack_from(data, len(data) - FOOTER.size)
    count_at = len(data) - FOOTER.size + 36  # the footer's frame count
    for position in (meta_off + 3, index_off + index_len // 2, count_at):
        damaged = bytearray(data)
        damaged[position] ^= 0x40
        target = tmp_path / "damaged.eeict"
        target.write_bytes(bytes(damaged))
        with pytest.raises(RecordingError, match=r"damaged\.eeict"):
            Recording.open(target)


def test_a_damaged_chunk_is_refused_when_read(written, tmp_path):
    path, _, _ = written
    damaged = bytearray(path.read_bytes())
    damaged[40] ^= 0xFF  # inside the first chunk
    target = tmp_path / "chunk.eeict"
    target.write_bytes(bytes(damaged))
    recording = Recording.open(target)  # only header, metadata and index are read at open
    with pytest.raises(RecordingError, match=r"chunk 0"):
        recording.frames(0, 10)


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    def frames_then_failure():
        yield from tiny_frames(200)
        raise RuntimeError("source broke half way")

    with pytest.raises(RuntimeError):
        write_recording(tmp_path / "x.eeict", INFO, frames_then_failure())
    assert list(tmp_path.iterdir()) == []


def test_out_of_order_frames_are_refused(tmp_path):
    frames = tiny_frames(10)
    frames[5]["tick"] = frames[4]["tick"]
    with pytest.raises(ValueError, match="out of order"):
        write_recording(tmp_path / "x.eeict", INFO, frames)
    assert list(tmp_path.iterdir()) == []


def _open_fds(*paths: Path) -> int:
    """Open descriptors of this process on ``paths`` (others come and go with other threads)."""
    targets = {str(p.resolve()) for p in paths}
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}") in targets
    return count


def test_refused_and_dropped_recordings_leave_no_open_files(written, tmp_path):
    path, _, _ = written
    cut = tmp_path / "cut.eeict"
    cut.write_bytes(path.read_bytes()[:-1])
    for _ in range(50):
        with pytest.raises(RecordingError):
            Recording.open(cut)
    assert _open_fds(cut) == 0
    recordings = [Recording.open(path) for _ in range(20)]
    assert _open_fds(path) == 20  # each holds its file open, to read it later
    del recordings
    gc.collect()
    assert _open_fds(path) == 0


def test_a_recording_read_from_memory_matches_the_file(written):
    path, frames, _ = written
    data = path.read_bytes()
    from_file, in_memory = Recording.open(path), Recording.from_bytes(data, "downloaded")
    assert in_memory.frames(0, 1000) == frames
    assert from_file.raw_bytes() == data and from_file.raw_bytes(100, 200) == data[100:200]
    assert b"".join(from_file.iter_raw(block=4096)) == data
