"""``eeict process --shard INDEX/COUNT``: the pods of an Indexed Job split a batch of demos.

Every demo must belong to exactly one shard whatever else is in the folder, a shard must leave
the others' demos alone and still skip its own finished ones, and a machine without the demo
parser must be told what to install.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from processing.commands import PROCESSING_EXTRA, Shard, process
from processing.recording import SUFFIX
from server.cli import main

NAMES = [f"match-{i:03d}" for i in range(200)] + ["de_mirage", "a b", "ünïcode"]


@pytest.mark.parametrize("count", [1, 2, 3, 8])
def test_every_demo_belongs_to_exactly_one_shard(count: int) -> None:
    shards = [Shard(index, count) for index in range(count)]
    for name in NAMES:
        owners = [s.index for s in shards if s.owns(Path(f"/uploads/{name}.dem"))]
        assert len(owners) == 1, (name, owners)
    if count > 1:  # a hash that put everything in one shard would pass the line above
        sizes = [sum(s.owns(Path(f"{n}.dem")) for n in NAMES) for s in shards]
        assert min(sizes) > len(NAMES) / count / 3, sizes


def test_a_demo_keeps_its_shard_whatever_folder_it_is_in() -> None:
    """Two demos that would write one recording always go to the same pod."""
    shard = Shard(1, 4)
    for name in NAMES:
        assert shard.owns(Path(f"/a/{name}.dem")) == shard.owns(Path(f"/b/c/{name}.dem"))


@pytest.mark.parametrize(
    "text", ["", "1", "1/", "/4", "a/4", "4/4", "-1/4", "0/0", "1/2/3", "1.5/4"]
)
def test_bad_shards_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="INDEX"):
        Shard.parse(text)


def test_parse_reads_index_and_count() -> None:
    shard = Shard.parse("2/5")
    assert (shard.index, shard.count) == (2, 5)
    assert str(shard) == "2/5"


def test_cli_refuses_a_bad_shard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["process", str(tmp_path / "x.dem"), "--shard", "3/3"]) == 2
    assert "--shard" in capsys.readouterr().err


def test_a_shard_processes_only_its_demos_and_skips_finished_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not-a-demo files fail to parse, which shows which demos a shard attempted."""
    uploads, out = tmp_path / "uploads", tmp_path / "recordings"
    uploads.mkdir()
    out.mkdir()
    demos = []
    for name in NAMES[:40]:
        demos.append(uploads / f"{name}.dem")
        demos[-1].write_bytes(b"not a demo")
    shard = Shard(0, 3)
    mine = [d for d in demos if shard.owns(d)]
    finished, *unfinished = mine
    (out / (finished.stem + SUFFIX)).write_bytes(b"done before")

    assert process(demos, out, force=False, shard=shard) == 1
    printed = capsys.readouterr()
    assert f"shard 0/3: {len(mine)} of {len(demos)} demos" in printed.out
    assert f"{finished.name}: {out / (finished.stem + SUFFIX)} exists, skipped" in printed.out
    attempted = {line.split(":")[0] for line in printed.err.splitlines() if "FAILED" in line}
    assert attempted == {d.name for d in unfinished}
    assert (out / (finished.stem + SUFFIX)).read_bytes() == b"done before"
    assert sorted(p.name for p in out.iterdir()) == [finished.stem + SUFFIX], "no partial files"


def test_without_the_demo_parser_process_says_what_to_install(tmp_path: Path) -> None:
    """As in the serving image: demoparser2 cannot be imported."""
    demo = tmp_path / "m.dem"
    demo.write_bytes(b"x")
    code = (
        "import sys; sys.modules['demoparser2'] = None; from server.cli import main; "
        f"sys.exit(main(['process', {str(demo)!r}, '--out', {str(tmp_path / 'out')!r}]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2, result.stderr
    assert PROCESSING_EXTRA in result.stderr and "demoparser2" in result.stderr
    assert "Traceback" not in result.stderr
