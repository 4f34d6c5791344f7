"""The ``eeict`` command as users run it: process, inspect, help."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(120)


def eeict(*args: str, cwd=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        capture_output=True, text=True, timeout=100, cwd=cwd,
    )  # fmt: skip


def test_process_goes_on_past_a_bad_file_and_fails_at_the_end(demos_dir, tmp_path):
    bad = tmp_path / "broken.dem"
    bad.write_bytes(b"PBDEMS2\0" + b"\x07" * 5000)
    out = tmp_path / "out"
    result = eeict("process", str(bad), str(demos_dir / "nade.dem"), "--out", str(out))
    assert result.returncode == 1
    assert "broken.dem: FAILED" in result.stderr and "1 of 2 files failed" in result.stderr
    summary = next(line for line in result.stdout.splitlines() if line.startswith("nade.dem"))
    assert "3457 ticks" in summary and "players" in summary and "MB" in summary
    assert sorted(p.name for p in out.iterdir()) == ["nade.eeict"]  # nothing half-written

    again = eeict("process", str(demos_dir / "nade.dem"), "--out", str(out))
    assert again.returncode == 0 and "exists, skipped (use --force" in again.stdout


def test_inspect_prints_metadata_and_refuses_a_damaged_file(demos_dir, tmp_path):
    eeict("process", str(demos_dir / "nade.dem"), "--out", str(tmp_path))
    recording = tmp_path / "nade.eeict"
    result = eeict("inspect", str(recording), "--json")
    meta = json.loads(result.stdout)
    assert result.returncode == 0
    assert (meta["map"], meta["frame_count"], meta["synthetic"]) == ("de_mirage", 3457, False)
    assert meta["source_file"] == "nade.dem" and len(meta["source_sha256"]) == 64
    text = eeict("inspect", str(recording))
    assert text.returncode == 0 and "frame_count: 3457" in text.stdout

    recording.write_bytes(recording.read_bytes()[:-10])
    refused = eeict("inspect", str(recording))
    assert refused.returncode == 1 and "nade.eeict" in refused.stderr
    assert "truncated" in refused.stderr


def test_help_explains_every_command():
    for command in ([], ["serve"], ["process"], ["inspect"]):
        result = eeict(*command, "--help")
        assert result.returncode == 0 and "usage: eeict" in result.stdout
    assert "EEICT_PORT" in eeict("serve", "--help").stdout


def test_written_recordings_are_group_writable(demos_dir, tmp_path):
    import os
    import stat

    old = os.umask(0o022)  # a typical umask: the command itself must not depend on it
    try:
        result = eeict("process", str(demos_dir / "nade.dem"), "--out", str(tmp_path / "out"))
    finally:
        os.umask(old)
    assert result.returncode == 0
    for path in (tmp_path / "out", tmp_path / "out" / "nade.eeict"):
        assert path.stat().st_mode & stat.S_IWGRP, path
