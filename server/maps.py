"""Map backdrops for the radar page: a CS2 overview from a folder, else an occupancy raster.

CS2 ships each map's overview (``<map>.txt``, Valve KeyValues with ``pos_x``, ``pos_y``,
``scale`` and, for multi-level maps, ``verticalsections``) and its radar image
(``<map>_radar*.png``); users who own the game can point the server at a folder holding them.
Without an image the backdrop is drawn from data the project has: where players stood on that
map in the recordings, rasterised on first use and cached. The page never hard-codes a
transform: a game position maps to radar pixels as ``((x - pos_x) / scale, (pos_y - y) / scale)``
on a ``RADAR_SIZE`` square.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import re
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlencode

import numpy as np
from aiohttp import web

from processing.recording import Recording

log = logging.getLogger(__name__)

RADAR_SIZE = 1024  # radar pixels the overview transform maps onto (CS2's radar images)
GRID = 512  # occupancy cells across the square: 2 radar pixels per cell
MAX_SAMPLED_FRAMES = 12_000  # per recording: bounds the first-use cost on hour-long demos
MAX_SAMPLED_TOTAL = 60_000  # over all recordings of a map (~10 s of decoding on first use)
MARGIN = 0.06  # occupancy without an overview: empty border around where players stood
MAP_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")  # whole name (fullmatch)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
DEFAULT_LEVEL = "default"
RESCAN_SECONDS = 30.0  # the overview folder is walked again at most this often
# CORS is the HTTP app's (configured origins only).
NO_CACHE = {"Cache-Control": "no-cache"}
IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable"}


class RecordingLike(Protocol):
    meta: dict[str, Any]
    frame_count: int

    def frame(self, index: int) -> dict[str, Any]: ...


# -- overview files ----------------------------------------------------------------------------

_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"|(\{)|(\})|//[^\n]*|([^\s{}"]+)')


def parse_keyvalues(text: str) -> dict[str, Any]:
    """Valve KeyValues text as nested dicts with lower-cased keys (the game ignores case)."""
    tokens: list[tuple[str, str]] = []
    for match in _TOKEN.finditer(text):
        quoted, opening, closing, bare = match.groups()
        if opening:
            tokens.append(("{", ""))
        elif closing:
            tokens.append(("}", ""))
        elif quoted is not None or bare is not None:  # else a comment
            tokens.append(("s", quoted if quoted is not None else bare))

    def block(pos: int) -> tuple[dict[str, Any], int]:
        out: dict[str, Any] = {}
        while pos < len(tokens):
            kind, key = tokens[pos]
            if kind == "}":
                return out, pos + 1
            if kind != "s" or pos + 1 >= len(tokens):
                raise ValueError(f"KeyValues: expected a key at token {pos}")
            kind, value = tokens[pos + 1]
            if kind == "{":
                out[key.lower()], pos = block(pos + 2)
            elif kind == "s":
                out[key.lower()], pos = value, pos + 2
            else:
                raise ValueError(f"KeyValues: unexpected '}}' after key {key!r}")
        return out, pos

    return block(0)[0]


@dataclass(frozen=True)
class Level:
    """One floor of a map: players with ``z_min <= z < z_max`` stand on it."""

    name: str
    z_min: float = -np.inf
    z_max: float = np.inf

    def describe(self, image_url: str) -> dict[str, Any]:
        finite = lambda v: float(v) if np.isfinite(v) else None  # noqa: E731 (JSON has no inf)
        return {"name": self.name, "z_min": finite(self.z_min), "z_max": finite(self.z_max),
                "image": image_url}  # fmt: skip


@dataclass(frozen=True)
class Transform:
    pos_x: float
    pos_y: float
    scale: float
    levels: tuple[Level, ...] = (Level(DEFAULT_LEVEL),)


@dataclass(frozen=True)
class FileStamp:
    """A file in the overview folder as it was when the folder was walked."""

    path: Path
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Overview:
    transform: Transform
    images: dict[str, FileStamp] = field(default_factory=dict)  # level name -> radar image


class OverviewFolder:
    """The overview folder's text and image files by lower-cased name, found in one walk of
    the tree; walked again when the index is older than ``RESCAN_SECONDS`` (files dropped in
    while the server runs appear), never once per request."""

    def __init__(self, root: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.root = root
        self._clock = clock
        self._files: dict[str, list[FileStamp]] = {}
        self._scanned_at: float | None = None

    def refresh(self) -> None:
        """Walks the tree if the index is stale (blocking: call it from a worker thread)."""
        now = self._clock()
        if self._scanned_at is not None and now - self._scanned_at < RESCAN_SECONDS:
            return
        files: dict[str, list[FileStamp]] = {}
        for folder, _, names in os.walk(self.root):
            for name in names:
                if Path(name).suffix.lower() not in (".txt", *IMAGE_SUFFIXES):
                    continue
                path = Path(folder) / name
                try:
                    info = path.stat()
                except OSError:
                    continue  # vanished while walking
                stamp = FileStamp(path, info.st_size, info.st_mtime_ns)
                files.setdefault(name.lower(), []).append(stamp)
        self._files, self._scanned_at = files, now

    @property
    def stale(self) -> bool:
        return self._scanned_at is None or self._clock() - self._scanned_at >= RESCAN_SECONDS

    def text(self, map_name: str) -> FileStamp | None:
        """``<map>.txt`` (the one nearest the root when there are several)."""
        found = self._files.get(f"{map_name}.txt".lower(), [])
        return min(found, key=lambda f: (len(f.path.parts), str(f.path)), default=None)

    def image(self, stem_prefix: str) -> FileStamp | None:
        """``<stem_prefix>*.png`` (preferred) or ``.jpg``; the shortest name wins (``_radar.png``
        over ``_radar_psd.png``)."""
        prefix = stem_prefix.lower()
        found = [
            f for name, stamps in self._files.items() if name.startswith(prefix)
            for f in stamps if f.path.suffix.lower() in IMAGE_SUFFIXES
        ]  # fmt: skip
        key = lambda f: (f.path.suffix.lower() != ".png", len(f.path.name), str(f.path))  # noqa: E731
        return min(found, key=key, default=None)

    def stamps(self, map_name: str) -> tuple[FileStamp, ...]:
        """Every file that could make up ``map_name``'s overview: its cache key."""
        prefix = f"{map_name}_".lower()
        names = sorted(
            n for n in self._files if n == f"{map_name}.txt".lower() or n.startswith(prefix)
        )
        return tuple(f for n in names for f in self._files[n])


def read_overview(folder: OverviewFolder, map_name: str) -> Overview | None:
    """The overview of ``map_name`` in the (refreshed) folder index, or None."""
    text = folder.text(map_name)
    if text is None:
        return None
    root = parse_keyvalues(text.path.read_text(errors="replace"))
    body = next((v for v in root.values() if isinstance(v, dict)), root)
    try:
        pos_x, pos_y, scale = (float(body[k]) for k in ("pos_x", "pos_y", "scale"))
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{text.path}: needs numeric pos_x, pos_y and scale ({exc})") from exc
    if not (math.isfinite(pos_x) and math.isfinite(pos_y) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"{text.path}: pos_x and pos_y must be finite, scale positive")
    try:
        levels = _levels(body.get("verticalsections"))
    except ValueError as exc:
        raise ValueError(f"{text.path}: {exc}") from exc
    images = {}
    for level in levels:
        prefix = map_name if level.name == DEFAULT_LEVEL else f"{map_name}_{level.name}"
        image = folder.image(f"{prefix}_radar")
        if image is not None:
            images[level.name] = image
    return Overview(Transform(pos_x, pos_y, scale, levels), images)


def _levels(sections: Any) -> tuple[Level, ...]:
    """Levels from ``verticalsections``, highest first; one unbounded level without any."""
    if not isinstance(sections, dict) or not sections:
        return (Level(DEFAULT_LEVEL),)
    levels = []
    for name, bounds in sections.items():
        if not isinstance(bounds, dict):
            continue
        try:
            z_min = float(bounds.get("altitudemin", -np.inf))
            z_max = float(bounds.get("altitudemax", np.inf))
        except ValueError as exc:
            raise ValueError(
                f"verticalsections {name!r}: altitudes must be numbers ({exc})"
            ) from exc
        levels.append(Level(name, z_min, z_max))
    return tuple(sorted(levels, key=lambda lv: -lv.z_max)) or (Level(DEFAULT_LEVEL),)


# -- occupancy raster --------------------------------------------------------------------------


def sample_positions(recordings: Iterable[RecordingLike]) -> np.ndarray:
    """Where players stood: (n, 3) x, y, z, with points along each player's path between
    samples (a bounded number of frames per recording, so corridors come out continuous).

    A player without a finite position is skipped; a recording that cannot be read is left
    out (and logged), so one bad file never takes the map away from everyone."""
    chunks: list[np.ndarray] = []
    recordings = list(recordings)
    budget = max(500, min(MAX_SAMPLED_FRAMES, MAX_SAMPLED_TOTAL // max(1, len(recordings))))
    for recording in recordings:
        try:
            segments = _segments(_private_reader(recording), budget)
        except Exception as exc:  # a corrupt chunk, a file changed under us: leave it out
            log.warning("map backdrop: skipped %r (%s)", getattr(recording, "name", "?"), exc)
            continue
        if segments:
            seg = np.asarray(segments)
            steps = np.linspace(0.0, 1.0, 6)[:, None, None]
            points = seg[None, :, :3] + (seg[None, :, 3:] - seg[None, :, :3]) * steps
            chunks.append(points.reshape(-1, 3))
    return np.concatenate(chunks) if chunks else np.empty((0, 3))


def _segments(recording: RecordingLike, budget: int) -> list[tuple[float, ...]]:
    """Each sampled player's step from their previous sample (no line across a respawn)."""
    count = recording.frame_count
    stride = max(1, -(-count // budget))
    reach = 6.0 * stride + 32.0  # a running player covers ~4 units a tick
    previous: dict[Any, tuple[float, float, float]] = {}
    segments: list[tuple[float, ...]] = []
    for index in range(0, count, stride):
        seen = {}
        players = recording.frame(index).get("players")
        for p in players if isinstance(players, list) else ():
            here = _position(p)
            if here is None:
                continue
            key = p.get("sid", p.get("name"))
            seen[key] = here
            before = previous.get(key, here)
            if math.hypot(here[0] - before[0], here[1] - before[1]) > reach:
                before = here  # respawn or teleport: no line across the map
            segments.append((*before, *here))
        previous = seen
    return segments


def _position(player: Any) -> tuple[float, float, float] | None:
    """A player's finite (x, y, z), z 0 when unknown; None without a usable x and y."""
    if not isinstance(player, dict):
        return None
    x, y, z = player.get("x"), player.get("y"), player.get("z")
    if not (_finite(x) and _finite(y)):
        return None
    return float(x), float(y), float(z) if _finite(z) else 0.0


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class _RangeReader:
    """A recording's file bytes by range through its own reads (pread: no shared position)."""

    def __init__(self, recording: Recording) -> None:
        self.recording = recording  # kept alive: it owns the file descriptor
        self.size = recording.size

    def read(self, offset: int, length: int) -> bytes:
        data = self.recording.raw_bytes(offset, offset + length)
        if len(data) != length:
            raise EOFError(f"{length - len(data)} bytes missing at offset {offset}")
        return data


def _private_reader(recording: RecordingLike) -> RecordingLike:
    """A reader with its own chunk cache and decompressor over the same file, reading chunks
    as they are needed: the raster is built in a worker thread while sessions read the
    recording on the event loop."""
    if isinstance(recording, Recording):
        return Recording(_RangeReader(recording), recording.name, recording.stamp)  # type: ignore[arg-type]
    return recording


def fit_transform(points: np.ndarray) -> Transform:
    """A square transform around ``points`` with a margin: no overview file, no game data."""
    lo, hi = points[:, :2].min(axis=0), points[:, :2].max(axis=0)
    span = float(max(hi - lo)) * (1 + 2 * MARGIN) or 1024.0
    centre = (lo + hi) / 2
    scale = span / RADAR_SIZE
    return Transform(float(centre[0] - span / 2), float(centre[1] + span / 2), scale)


def occupancy_png(points: np.ndarray, transform: Transform, level: Level) -> bytes:
    """A grey, translucent PNG (RADAR_SIZE square): brighter where players stood more often."""
    on_level = points[(points[:, 2] >= level.z_min) & (points[:, 2] < level.z_max)]
    cell = RADAR_SIZE / GRID
    col = ((on_level[:, 0] - transform.pos_x) / transform.scale / cell).astype(np.int64)
    row = ((transform.pos_y - on_level[:, 1]) / transform.scale / cell).astype(np.int64)
    inside = (col >= 0) & (col < GRID) & (row >= 0) & (row < GRID)
    counts = np.zeros((GRID, GRID), dtype=np.float64)
    np.add.at(counts, (row[inside], col[inside]), 1.0)
    padded = np.pad(counts, 1)  # 3x3 box blur: a player is wider than one cell
    blurred = sum(padded[r : r + GRID, c : c + GRID] for r in range(3) for c in range(3)) / 9
    value = np.log1p(blurred) / max(np.log1p(blurred.max()), 1e-9)
    grey = np.where(blurred > 0, 70 + 150 * value, 0).astype(np.uint8)
    alpha = np.where(blurred > 0, 110 + 145 * value, 0).astype(np.uint8)
    pixels = np.stack([grey, alpha], axis=-1)
    pixels = pixels.repeat(int(cell), axis=0).repeat(int(cell), axis=1)
    return encode_png(pixels)


def encode_png(pixels: np.ndarray) -> bytes:
    """8-bit grey+alpha (h, w, 2) or RGBA (h, w, 4) pixels as a PNG (no imaging library)."""
    height, width, channels = pixels.shape
    colour_type = {2: 4, 4: 6}[channels]
    rows = np.concatenate([np.zeros((height, 1), np.uint8), pixels.reshape(height, -1)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"".join([
        b"\x89PNG\r\n\x1a\n", chunk(b"IHDR", header),
        chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)), chunk(b"IEND", b""),
    ])  # fmt: skip


# -- serving -----------------------------------------------------------------------------------


@dataclass
class Backdrop:
    """What the page draws under the players, ready to describe and serve."""

    source: str  # "overview" | "occupancy"
    transform: Transform
    images: dict[str, tuple[bytes, str] | FileStamp]  # level -> PNG bytes + type, or a file
    label: str

    def version(self, level: str) -> str:
        """Changes whenever the level's image does: the image URL carries it, so a browser
        never pairs a new transform with an old cached image."""
        found = self.images[level]
        if isinstance(found, FileStamp):
            digest = hashlib.sha1(f"{found.path}|{found.size}|{found.mtime_ns}".encode())
        else:
            digest = hashlib.sha1(found[0])
        return digest.hexdigest()[:16]

    def image_url(self, map_name: str, level: Level) -> str:
        query = {} if level.name == DEFAULT_LEVEL else {"level": level.name}
        if level.name in self.images:
            query["v"] = self.version(level.name)
        encoded = urlencode(query, quote_via=quote)
        return f"/maps/{map_name}/image" + (f"?{encoded}" if encoded else "")

    def describe(self, map_name: str) -> dict[str, Any]:
        levels = self.transform.levels
        return {
            "map": map_name, "source": self.source, "label": self.label,
            "pos_x": self.transform.pos_x, "pos_y": self.transform.pos_y,
            "scale": self.transform.scale, "size": RADAR_SIZE,
            "image": self.image_url(map_name, levels[0]),
            "levels": [lv.describe(self.image_url(map_name, lv)) for lv in levels],
        }  # fmt: skip


class MapBackdrops:
    """Finds or builds each map's backdrop once; builds it again when the recordings of that
    map or its overview files change. A failure is kept like a result (the same inputs fail
    the same way), and a name with neither recordings nor overview files is answered from the
    folder index at once, so no request for a made-up name costs a build or a lock."""

    def __init__(
        self,
        get_recordings: Callable[[], Sequence[RecordingLike]],
        overview_folder: Path | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._get_recordings = get_recordings
        self._folder = OverviewFolder(Path(overview_folder), clock) if overview_folder else None
        self._cache: dict[str, tuple[tuple, Backdrop | Exception | None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}  # only maps with recordings or overview files

    async def get(self, map_name: str) -> Backdrop | None:
        """The backdrop, None when there is nothing to make one from; raises ValueError for a
        broken overview file."""
        if self._folder is not None and self._folder.stale:
            await asyncio.to_thread(self._folder.refresh)
        recordings = [r for r in self._get_recordings() if r.meta.get("map") == map_name]
        # Generated matches walk made-up paths: only where real players stood, when any did.
        real = [r for r in recordings if not r.meta.get("synthetic")]
        recordings = real or recordings
        files = self._folder.stamps(map_name) if self._folder is not None else ()
        if not recordings and not files:
            return None
        names = sorted((str(getattr(r, "name", id(r))), r.frame_count) for r in recordings)
        key = (tuple(names), files)
        async with self._locks.setdefault(map_name, asyncio.Lock()):
            cached = self._cache.get(map_name)
            if cached is None or cached[0] != key:
                started = time.monotonic()
                try:
                    result: Backdrop | Exception | None = await asyncio.to_thread(
                        self._build, map_name, recordings
                    )
                except Exception as exc:
                    result = exc
                self._cache[map_name] = cached = (key, result)
                log.info(
                    "map %r: %s in %.1f s", map_name,
                    "failed: " + str(result) if isinstance(result, Exception)
                    else result.label if result else "nothing to draw", time.monotonic() - started,
                )  # fmt: skip
        result = cached[1]
        if isinstance(result, Exception):
            raise result
        return result

    def _build(self, map_name: str, recordings: list[RecordingLike]) -> Backdrop | None:
        overview = read_overview(self._folder, map_name) if self._folder else None
        if overview is not None and overview.images:
            images: dict[str, tuple[bytes, str] | FileStamp] = dict(overview.images)
            return Backdrop("overview", overview.transform, images, "CS2 overview")
        points = sample_positions(recordings)
        if not len(points):
            return None
        # An overview text without images still gives the transform and the levels by height.
        transform = overview.transform if overview else fit_transform(points)
        images = {lv.name: (occupancy_png(points, transform, lv), "image/png")
                  for lv in transform.levels}  # fmt: skip
        count = len(recordings)
        label = f"where players stood in {count} recording{'s' * (count != 1)} (no overview)"
        return Backdrop("occupancy", transform, images, label)


def map_routes(
    get_recordings: Callable[[], Sequence[RecordingLike]],
    overview_folder: Path | None,
    clock: Callable[[], float] = time.monotonic,
) -> list[web.RouteDef]:
    """``GET /maps/{map}`` (transform and levels as JSON) and ``GET /maps/{map}/image``
    (``?level=<name>``, ``&v=<version>``), for the HTTP app to mount."""
    backdrops = MapBackdrops(get_recordings, overview_folder, clock)

    async def backdrop_of(request: web.Request) -> tuple[str, Backdrop]:
        map_name = request.match_info["map"]
        if not MAP_NAME.fullmatch(map_name):
            raise _error(400, "bad_map", f"not a map name: {map_name[:80]!r}")
        try:
            backdrop = await backdrops.get(map_name)
        except ValueError as exc:  # a broken overview file: say which and why
            raise _error(500, "bad_overview", str(exc)) from exc
        if backdrop is None:
            raise _error(
                404, "unknown_map",
                f"no overview for {map_name!r} in the overview folder and no recording of it",
            )  # fmt: skip
        return map_name, backdrop

    async def describe(request: web.Request) -> web.Response:
        map_name, backdrop = await backdrop_of(request)
        # Cheap to answer (built once), and it names the image version: always fresh.
        return web.json_response(backdrop.describe(map_name), headers=NO_CACHE)

    async def image(request: web.Request) -> web.StreamResponse:
        _, backdrop = await backdrop_of(request)
        level = request.query.get("level", backdrop.transform.levels[0].name)
        found = backdrop.images.get(level)
        if found is None:
            known = ", ".join(map(repr, backdrop.images)) or "none"
            raise _error(
                404, "unknown_level", f"no image for level {level[:80]!r}; levels: {known}"
            )
        # The version in the URL names these very bytes: cached for good; without it, revalidated.
        current = request.query.get("v") == backdrop.version(level)
        headers = IMMUTABLE if current else NO_CACHE
        if isinstance(found, FileStamp):
            content_type = CONTENT_TYPES[found.path.suffix.lower()]
            return web.FileResponse(found.path, headers={**headers, "Content-Type": content_type})
        body, content_type = found
        return web.Response(body=body, content_type=content_type, headers=headers)

    return [web.get("/maps/{map}", describe), web.get("/maps/{map}/image", image)]


def _error(status: int, code: str, message: str) -> web.HTTPException:
    kinds = {400: web.HTTPBadRequest, 404: web.HTTPNotFound, 500: web.HTTPInternalServerError}
    return kinds[status](
        text=json.dumps({"error": code, "message": message}),
        content_type="application/json",
    )  # fmt: skip
