"""server/maps.py on a real loopback aiohttp server: overviews read from a folder made here
(transform, levels, images), the occupancy backdrop built from recordings, and clear errors."""

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
from server.maps import RADAR_SIZE, encode_png, map_routes, parse_keyvalues

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


@pytest.fixture
async def serve() -> Callable:
    """Factory: map_routes(...) on a real 127.0.0.1 server; returns a client for it."""
    clients: list[TestClient] = []

    async def start(recordings: list, folder: Path | None) -> TestClient:
        app = web.Application()
        app.add_routes(map_routes(lambda: recordings, folder))
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
    assert info["image"] == "/maps/de_nuke/image"
    for level, expected in ((info["levels"][0], upper), (info["levels"][1], lower)):
        image = await client.get(level["image"])
        assert image.status == 200 and image.content_type == "image/png"
        assert await image.read() == expected
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
