"""server/maps.py on a real loopback aiohttp server: overviews read from a folder made here
(transform, levels, images), the occupancy backdrop built from recordings, caching (of results,
failures and the folder walk) with versioned image URLs, bad inputs, and clear errors."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from server_process import match_frames, write_match

from processing.recording import Recording
from server import maps
from server.maps import RADAR_SIZE, MapBackdrops, encode_png, map_routes, parse_keyvalues

NUKE_TXT = """// overview file as CS2 ships it
"de_nuke"
{
\t"material"\t"overviews/de_nuke"
\t"pos_x"\t\t"-3453"
\t"pos_y"\t\t"2887"
\t"scale"\t\t"7"
\t"verticalsections"
\t{
\t\t"default" // the primary radar image
\t\t{
\t\t\t"AltitudeMax"\t"10000"
\t\t\t"AltitudeMin"\t"-495"
\t\t}
\t\t"lower"
\t\t{
\t\t\t"AltitudeMax"\t"-495"
\t\t\t"AltitudeMin"\t"-10000"
\t\t}
\t}
}
"""


def decode_png(data: bytes) -> np.ndarray:
    """(h, w, channels) pixels of a non-interlaced 8-bit PNG whose rows all use filter 0."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        assert zlib.crc32(kind + body) == struct.unpack(">I", data[pos + 8 + length :][:4])[0]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour_type, *_ = header
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
    assert depth == 8
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, 1 + width * channels)
    assert not rows[:, 0].any(), "only filter type 0 is decoded here"
    return rows[:, 1:].reshape(height, width, channels)


class FakeClock:
    """Seconds that pass only when a test says so (the overview folder's rescan interval)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def serve() -> Callable:
    """Factory: map_routes(...) on a real 127.0.0.1 server; returns a client for it."""
    clients: list[TestClient] = []

    async def start(
        recordings: list, folder: Path | None, clock: Callable[[], float] | None = None
    ) -> TestClient:
        app = web.Application()
        app.add_routes(map_routes(lambda: recordings, folder, clock or FakeClock()))
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


def test_keyvalues_nested_sections_comments_and_case():
    parsed = parse_keyvalues(NUKE_TXT)
    body = parsed["de_nuke"]
    assert body["pos_x"] == "-3453" and body["scale"] == "7"
    assert body["verticalsections"]["lower"] == {"altitudemax": "-495", "altitudemin": "-10000"}
    assert parse_keyvalues('"a" { "empty" "" }') == {"a": {"empty": ""}}
    with pytest.raises(ValueError):
        parse_keyvalues('"a" { "b" }')


async def test_overview_with_levels_serves_transform_and_images(tmp_path, serve):
    folder = tmp_path / "overviews"
    (folder / "resource").mkdir(parents=True)
    (folder / "resource" / "de_nuke.txt").write_text(NUKE_TXT)
    upper = encode_png(np.full((4, 4, 4), 200, np.uint8))
    lower = encode_png(np.full((4, 4, 4), 50, np.uint8))
    (folder / "de_nuke_radar_psd.png").write_bytes(upper)
    (folder / "de_nuke_lower_radar_psd.png").write_bytes(lower)
    client = await serve([], folder)

    response = await client.get("/maps/de_nuke")
    assert response.status == 200
    info = await response.json()
    assert info["source"] == "overview"
    assert (info["pos_x"], info["pos_y"], info["scale"], info["size"]) == (-3453, 2887, 7, 1024)
    assert [(lv["name"], lv["z_min"], lv["z_max"]) for lv in info["levels"]] == [
        ("default", -495, 10000), ("lower", -10000, -495),
    ]  # fmt: skip
    assert info["image"].startswith("/maps/de_nuke/image?v=")  # the version of these bytes
    assert info["levels"][1]["image"].startswith("/maps/de_nuke/image?level=lower&v=")
    for level, expected in ((info["levels"][0], upper), (info["levels"][1], lower)):
        image = await client.get(level["image"])
        assert image.status == 200 and image.content_type == "image/png"
        assert await image.read() == expected
        assert "immutable" in image.headers["Cache-Control"]  # versioned: kept for good
    unversioned = await client.get("/maps/de_nuke/image")
    assert await unversioned.read() == upper and unversioned.headers["Cache-Control"] == "no-cache"
    assert response.headers["Cache-Control"] == "no-cache"  # the transform is always fresh
    missing = await client.get("/maps/de_nuke/image?level=basement")
    assert missing.status == 404 and "lower" in (await missing.json())["message"]


async def test_occupancy_backdrop_shows_where_players_stood(tmp_path, serve):
    recording = Recording.open(write_match(tmp_path))
    client = await serve([recording], None)
    info = await (await client.get("/maps/de_mirage")).json()
    assert info["source"] == "occupancy" and "recording" in info["label"]
    assert [lv["name"] for lv in info["levels"]] == ["default"]
    pixels = decode_png(await (await client.get(info["image"])).read())
    assert pixels.shape == (RADAR_SIZE, RADAR_SIZE, 2)

    def pixel_of(x: float, y: float) -> tuple[int, int]:
        col = int((x - info["pos_x"]) / info["scale"])
        row = int((info["pos_y"] - y) / info["scale"])
        return row, col

    frames = match_frames()
    stood = {pixel_of(p["x"], p["y"]) for f in frames[::50] for p in f["players"]}
    assert all(0 <= r < RADAR_SIZE and 0 <= c < RADAR_SIZE for r, c in stood)
    assert all(pixels[r, c, 1] > 0 for r, c in stood), "a place a player stood is not drawn"
    # The centre of a player's circle (200 units from the path) was never stood on.
    empty = pixel_of(-300.0, -1900.0)
    assert pixels[empty][1] == 0
    assert pixels[0, 0, 1] == 0 and pixels[-1, -1, 1] == 0  # the margin


async def test_occupancy_uses_an_overview_transform_and_is_cached(tmp_path, serve, monkeypatch):
    folder = tmp_path / "overviews"
    folder.mkdir()
    (folder / "de_mirage.txt").write_text(
        '"de_mirage" { "pos_x" "-3230" "pos_y" "1713" "scale" "5.00" }'
    )
    first = Recording.open(write_match(tmp_path, "one", count=300))
    recordings = [first]
    calls = []
    real_frame = Recording.frame

    def counting_frame(self, index):
        calls.append(index)
        return real_frame(self, index)

    monkeypatch.setattr(Recording, "frame", counting_frame)  # counts reads, reads for real
    client = await serve(recordings, folder)
    info = await (await client.get("/maps/de_mirage")).json()
    assert info["source"] == "occupancy"
    assert (info["pos_x"], info["pos_y"], info["scale"]) == (-3230, 1713, 5)
    built = len(calls)
    assert built > 0
    await client.get("/maps/de_mirage")
    await client.get("/maps/de_mirage/image")
    assert len(calls) == built, "the raster was rebuilt without a new recording"
    recordings.append(Recording.open(write_match(tmp_path, "two", count=300)))
    info = await (await client.get("/maps/de_mirage")).json()
    assert len(calls) > built and "2 recordings" in info["label"]


async def test_errors_are_clear(tmp_path, serve):
    folder = tmp_path / "overviews"
    folder.mkdir()
    (folder / "de_broken.txt").write_text('"de_broken" { "pos_x" "1" }')
    client = await serve([], folder)
    unknown = await client.get("/maps/de_nowhere")
    assert unknown.status == 404 and (await unknown.json())["error"] == "unknown_map"
    assert (await client.get("/maps/de%20mirage")).status == 400
    assert (await client.get("/maps/de_broken%0A")).status == 400  # the whole name must match
    broken = await client.get("/maps/de_broken")
    body = await broken.json()
    assert broken.status == 500 and "pos_y" in body["message"]
    assert "de_broken.txt" in body["message"]


async def test_generated_matches_count_only_without_real_recordings(tmp_path, serve):
    from processing.recording import write_recording
    from processing.source import SourceInfo

    info = SourceInfo("de_mirage", 64, "gen", "0" * 64, "synthetic", synthetic=True)
    frames = match_frames(200)
    for frame in frames:
        for player in frame["players"]:
            player["x"] += 5000.0  # far from where the real match's players stood
    write_recording(tmp_path / "gen.eeict", info, frames)
    generated = Recording.open(tmp_path / "gen.eeict")
    real = Recording.open(write_match(tmp_path, "real", count=200))

    both = await (await serve([generated, real], None)).get("/maps/de_mirage")
    info_both = await both.json()
    assert "1 recording " in info_both["label"]
    assert info_both["pos_x"] + 1024 * info_both["scale"] < 4000  # fitted to the real one only
    alone = await (await (await serve([generated], None)).get("/maps/de_mirage")).json()
    assert alone["source"] == "occupancy" and alone["pos_x"] > 2000


def _pixel_of(info: dict, x: float, y: float) -> tuple[int, int]:
    return int((info["pos_y"] - y) / info["scale"]), int((x - info["pos_x"]) / info["scale"])


async def test_bad_samples_and_unreadable_recordings_are_left_out(tmp_path, serve):
    """A recording with players at x None (and a NaN, a string, a bool) still gives a backdrop
    of the good samples; a recording whose chunk is damaged is skipped, not a 500."""
    from processing.recording import write_recording
    from processing.source import SourceInfo

    frames = match_frames(300)
    for i, frame in enumerate(frames):
        bad = frame["players"][0]  # Alpha: never drawn
        bad["x"] = [None, float("nan"), "12", True][i % 4]
        frame["players"][1]["z"] = None  # Bravo: no height, still drawn (at z 0)
    info = SourceInfo("de_mirage", 64, "bad.dem", "0" * 64, "test")
    write_recording(tmp_path / "bad.eeict", info, frames)
    damaged = bytearray(write_match(tmp_path, "damaged", count=300).read_bytes())
    damaged[40] ^= 0xFF  # inside the first chunk: opens, fails when read
    (tmp_path / "damaged.eeict").write_bytes(bytes(damaged))
    recordings = [
        Recording.open(tmp_path / "bad.eeict"),
        Recording.open(tmp_path / "damaged.eeict"),
    ]
    client = await serve(recordings, None)

    response = await client.get("/maps/de_mirage")
    assert response.status == 200, await response.text()
    described = await response.json()
    pixels = decode_png(await (await client.get(described["image"])).read())
    bravo = [p for f in frames[::50] for p in f["players"] if p["name"] == "Bravo"]
    assert all(pixels[_pixel_of(described, p["x"], p["y"])][1] > 0 for p in bravo)
    # Alpha's circle around (-300, -1900) was never sampled: its spot stays empty.
    alpha = match_frames(300)[150]["players"][0]
    assert pixels[_pixel_of(described, alpha["x"], alpha["y"])][1] == 0


async def test_recordings_are_read_in_ranges_not_copied_whole(tmp_path, serve, monkeypatch):
    recording = Recording.open(write_match(tmp_path))
    reads: list[int] = []
    real_raw_bytes = Recording.raw_bytes

    def counting_raw_bytes(self, start=0, stop=None):
        data = real_raw_bytes(self, start, stop)
        reads.append(len(data))
        return data

    monkeypatch.setattr(Recording, "raw_bytes", counting_raw_bytes)  # counts, reads for real
    client = await serve([recording], None)
    assert (await client.get("/maps/de_mirage")).status == 200
    assert reads, "the backdrop was built without reading the recording"
    assert max(reads) < recording.size / 4  # chunk by chunk, never the whole file


async def test_the_folder_is_walked_once_and_unknown_names_cost_nothing(tmp_path, monkeypatch):
    folder = tmp_path / "overviews"
    folder.mkdir()
    (folder / "de_nuke.txt").write_text(NUKE_TXT)
    walks: list[str] = []
    real_walk = maps.os.walk

    def counting_walk(top, *args, **kwargs):
        walks.append(str(top))
        return real_walk(top, *args, **kwargs)

    monkeypatch.setattr(maps.os, "walk", counting_walk)
    clock = FakeClock()
    backdrops = MapBackdrops(lambda: [], folder, clock)
    for n in range(500):  # made-up names: answered from the index, no lock, no cache entry
        assert await backdrops.get(f"de_made_up_{n}") is None
    assert len(walks) == 1 and not backdrops._locks and not backdrops._cache
    # A file dropped in while the server runs is found after the rescan interval.
    (folder / "de_new.txt").write_text('"de_new" { "pos_x" "1" "pos_y" "2" "scale" "3" }')
    (folder / "de_new_radar.png").write_bytes(encode_png(np.zeros((4, 4, 4), np.uint8)))
    assert await backdrops.get("de_new") is None
    clock.now += maps.RESCAN_SECONDS
    found = await backdrops.get("de_new")
    assert found is not None and found.source == "overview" and len(walks) == 2
    assert set(backdrops._locks) == {"de_new"}


async def test_a_failure_is_cached_until_its_file_changes(tmp_path, serve, monkeypatch):
    folder = tmp_path / "overviews"
    folder.mkdir()
    broken = folder / "de_broken.txt"
    broken.write_text('"de_broken" { "pos_x" "1" }')
    parsed: list[str] = []
    real_parse = maps.parse_keyvalues

    def counting_parse(text):
        parsed.append(text)
        return real_parse(text)

    monkeypatch.setattr(maps, "parse_keyvalues", counting_parse)
    clock = FakeClock()
    client = await serve([], folder, clock)
    for _ in range(3):
        assert (await client.get("/maps/de_broken")).status == 500
    assert len(parsed) == 1, "the same broken file was read again"
    broken.write_text('"de_broken" { "pos_x" "1" "pos_y" "2" "scale" "4" }')
    (folder / "de_broken_radar.png").write_bytes(encode_png(np.zeros((4, 4, 4), np.uint8)))
    clock.now += maps.RESCAN_SECONDS
    fixed = await client.get("/maps/de_broken")
    assert fixed.status == 200 and (await fixed.json())["scale"] == 4


async def test_level_names_are_encoded_in_image_urls(tmp_path, serve):
    folder = tmp_path / "overviews"
    folder.mkdir()
    odd = "upper floor&v=1"
    (folder / "de_odd.txt").write_text(
        '"de_odd" { "pos_x" "0" "pos_y" "0" "scale" "2" "verticalsections" {'
        f' "{odd}" {{ "AltitudeMin" "0" }} "default" {{ "AltitudeMax" "0" }} }} }}'
    )
    images = {"default": 30, odd: 90}
    for level, grey in images.items():
        name = "de_odd_radar.png" if level == "default" else f"de_odd_{level}_radar.png"
        (folder / name).write_bytes(encode_png(np.full((4, 4, 4), grey, np.uint8)))
    client = await serve([], folder)
    info = await (await client.get("/maps/de_odd")).json()
    url = {lv["name"]: lv["image"] for lv in info["levels"]}[odd]
    assert "level=upper%20floor%26v%3D1&v=" in url
    assert decode_png(await (await client.get(url)).read())[0, 0, 0] == 90


async def test_the_image_version_changes_with_the_recordings(tmp_path, serve):
    recordings = [Recording.open(write_match(tmp_path, "one", count=300))]
    client = await serve(recordings, None)
    first = await (await client.get("/maps/de_mirage")).json()
    recordings.append(Recording.open(write_match(tmp_path, "two", count=600)))
    second = await (await client.get("/maps/de_mirage")).json()
    assert first["image"] != second["image"]
    old = await client.get(first["image"])  # an old page's URL: today's image, not kept
    assert old.headers["Cache-Control"] == "no-cache"
    new = await client.get(second["image"])
    assert "immutable" in new.headers["Cache-Control"] and await new.read() == await old.read()


async def test_an_overview_text_without_images_splits_the_occupancy_by_height(tmp_path, serve):
    """No radar images, only de_nuke.txt: the occupancy backdrop gets Nuke's two levels, and
    each level's image shows only the players who stood on that floor."""
    from processing.recording import write_recording
    from processing.source import SourceInfo

    folder = tmp_path / "overviews"
    folder.mkdir()
    (folder / "de_nuke.txt").write_text(NUKE_TXT)
    frames = match_frames(300)
    for frame in frames:
        for player in frame["players"]:
            player["z"] = -600.0 if player["name"] == "Charlie" else 0.0  # downstairs
    write_recording(tmp_path / "n.eeict", SourceInfo("de_nuke", 64, "n", "0" * 64, "t"), frames)
    client = await serve([Recording.open(tmp_path / "n.eeict")], folder)
    info = await (await client.get("/maps/de_nuke")).json()
    assert info["source"] == "occupancy" and (info["pos_x"], info["scale"]) == (-3453, 7)
    raster = {}
    for level in info["levels"]:
        raster[level["name"]] = decode_png(await (await client.get(level["image"])).read())
    assert set(raster) == {"default", "lower"}
    for player in frames[0]["players"]:
        on = "lower" if player["name"] == "Charlie" else "default"
        off = "default" if on == "lower" else "lower"
        spot = _pixel_of(info, player["x"], player["y"])
        assert raster[on][spot][1] > 0 and raster[off][spot][1] == 0, player["name"]
