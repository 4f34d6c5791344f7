"""Connection options, shaped frames and compressed ticks messages (server/streams/encoding.py)."""

from __future__ import annotations

import zlib

import msgpack
import pytest
from server_process import match_frames

from processing.frames import FRAME_FIELDS, PLAYER_FIELDS
from server import protocol
from server.streams.encoding import (
    FULL,
    MAX_EVERY,
    BurstCache,
    ConnectionOptions,
    OptionError,
    Shape,
    decode_ticks,
    encode_ticks,
    first_kept,
    shape_frames,
)

FRAMES = match_frames(200)
RAW = b"".join(msgpack.packb(frame) for frame in FRAMES)


def frames_bytes(start: int, stop: int) -> bytes:
    return b"".join(msgpack.packb(frame) for frame in FRAMES[start:stop])


def unpack_all(data: bytes) -> list[dict]:
    unpacker = msgpack.Unpacker()
    unpacker.feed(data)
    return list(unpacker)


# -- options ---------------------------------------------------------------------------------


def test_no_options_mean_plain_full_frames():
    options = ConnectionOptions.parse({"token": "secret"})
    assert options == ConnectionOptions(None, FULL)
    assert options.shape.full
    assert ConnectionOptions.parse({"encoding": "none"}).encoding is None


def test_options_parse_encoding_fields_and_every():
    options = ConnectionOptions.parse(
        {"encoding": "deflate", "fields": "players.x, players.y,bomb", "every": "4"}
    )
    assert options.encoding == "deflate"
    assert options.shape == Shape(
        frozenset({"tick", "players", "bomb"}), frozenset({"sid", "x", "y"}), 4
    )


def test_equal_requests_give_one_shape():
    a = ConnectionOptions.parse({"fields": "bomb,players.y,players.x"}).shape
    b = ConnectionOptions.parse({"fields": "players.x,tick,bomb,players.y,players.sid"}).shape
    assert a == b and hash(a) == hash(b)
    # Whole players win over single player fields; asking for every field is the full shape.
    whole = ConnectionOptions.parse({"fields": "players,players.x"}).shape
    assert whole.player_fields is None and "players" in whole.frame_fields
    assert ConnectionOptions.parse({"fields": ",".join(FRAME_FIELDS)}).shape.full
    every_player = ",".join(f"players.{name}" for name in PLAYER_FIELDS)
    assert ConnectionOptions.parse({"fields": every_player}).shape.player_fields is None


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ({"encoding": "zstd"}, "encoding"),
        ({"encoding": "DEFLATE"}, "encoding"),
        ({"every": "0"}, "every"),
        ({"every": str(MAX_EVERY + 1)}, "every"),
        ({"every": "-2"}, "every"),
        ({"every": "2.5"}, "every"),
        ({"every": "٣"}, "every"),  # a digit, but not an ASCII one
        ({"fields": ""}, "empty"),
        ({"fields": " , "}, "empty"),
        ({"fields": "inventory"}, "inventory"),
        ({"fields": "players.inventory"}, "inventory"),
        ({"fields": "x"}, "players.x"),  # a player field without its prefix: the error says how
        ({"fields": "tick," * 1000}, "limit"),
    ],
)
def test_bad_options_are_refused_with_a_clear_message(query, words):
    with pytest.raises(OptionError) as caught:
        ConnectionOptions.parse(query)
    assert caught.value.code == "bad_option"
    assert words in caught.value.message
    reply = msgpack.unpackb(caught.value.reply())
    assert reply["type"] == "error" and reply["code"] == "bad_option"


# -- shapes ----------------------------------------------------------------------------------


def test_full_shape_passes_the_bytes_through():
    data = frames_bytes(0, 8)
    assert shape_frames(data, 8, FULL) == (data, 8)


def test_field_subset_keeps_tick_and_sid_and_only_the_named_fields():
    shape = ConnectionOptions.parse({"fields": "players.x,players.hp,bomb"}).shape
    data, count = shape_frames(frames_bytes(0, 16), 16, shape)
    shaped = unpack_all(data)
    assert count == 16 == len(shaped)
    for original, frame in zip(FRAMES[:16], shaped, strict=True):
        assert list(frame) == ["tick", "players", "bomb"]  # the frame's own order
        assert frame["tick"] == original["tick"] and frame["bomb"] == original["bomb"]
        assert frame["players"] == [
            {"sid": p["sid"], "hp": p["hp"], "x": p["x"]} for p in original["players"]
        ]


def test_frame_fields_without_players_drop_players():
    shape = ConnectionOptions.parse({"fields": "round_time,nades"}).shape
    data, _ = shape_frames(frames_bytes(80, 90), 10, shape)
    assert unpack_all(data) == [
        {"tick": f["tick"], "round_time": f["round_time"], "nades": f["nades"]}
        for f in FRAMES[80:90]
    ]


@pytest.mark.parametrize(("first_seq", "every"), [(0, 4), (3, 4), (5, 3), (7, 1), (9, 64)])
def test_every_keeps_the_frames_whose_seq_is_a_multiple(first_seq, every):
    count = 24
    shape = Shape(every=every)
    data, kept = shape_frames(frames_bytes(first_seq, first_seq + count), count, shape, first_seq)
    expected = [FRAMES[s] for s in range(first_seq, first_seq + count) if s % every == 0]
    assert kept == len(expected)
    assert unpack_all(data) == expected
    if expected:
        assert expected[0] is FRAMES[first_kept(first_seq, every)]


def test_every_and_fields_combine():
    shape = ConnectionOptions.parse({"fields": "players.x", "every": "8"}).shape
    data, kept = shape_frames(frames_bytes(0, 32), 32, shape)
    assert kept == 4
    assert [f["tick"] for f in unpack_all(data)] == [FRAMES[s]["tick"] for s in (0, 8, 16, 24)]


# -- messages --------------------------------------------------------------------------------


def test_plain_message_is_todays_envelope():
    data = frames_bytes(10, 18)
    fields = {"stream": "s", "seq": 10, "gen": 2}
    assert encode_ticks(fields, 8, data, None) == protocol.ticks_envelope("s", 10, 8, data, gen=2)


@pytest.mark.parametrize("count", [1, 8, 16, 256])
def test_deflate_message_decodes_to_exactly_the_plain_frames(count):
    data = b"".join(msgpack.packb(FRAMES[i % len(FRAMES)]) for i in range(count))
    message = encode_ticks({"stream": "s", "seq": 40, "fetch": 7}, count, data, "deflate")
    decoded = msgpack.unpackb(message)
    assert list(decoded) == ["type", "stream", "seq", "count", "fetch", "encoding", "data"]
    assert decoded["count"] == count and decoded["seq"] == 40 and decoded["fetch"] == 7
    inflated = zlib.decompress(decoded["data"], wbits=-15)  # raw DEFLATE, what clients inflate
    assert inflated == msgpack.Packer().pack_array_header(count) + data
    plain = msgpack.unpackb(encode_ticks({"stream": "s", "seq": 40}, count, data, None))
    assert decode_ticks(decoded) == plain["frames"] == decode_ticks(plain)
    assert len(message) * 5 < len(data) or count == 1  # it does compress


def test_deflate_of_shaped_frames_round_trips():
    shape = ConnectionOptions.parse({"fields": "players.x,players.y", "every": "2"}).shape
    data, kept = shape_frames(frames_bytes(0, 16), 16, shape)
    message = msgpack.unpackb(
        encode_ticks({"stream": "s", "seq": 0, "every": 2}, kept, data, "deflate")
    )
    assert decode_ticks(message) == unpack_all(data)


def test_decode_ticks_refuses_a_lying_count():
    message = msgpack.unpackb(
        encode_ticks({"stream": "s", "seq": 0}, 4, frames_bytes(0, 4), "deflate")
    )
    message["count"] = 5
    with pytest.raises(ValueError, match="count"):
        decode_ticks(message)


def test_unknown_encoding_is_a_programming_error():
    with pytest.raises(ValueError):
        encode_ticks({"stream": "s", "seq": 0}, 1, frames_bytes(0, 1), "zstd")


# -- cache -----------------------------------------------------------------------------------


def test_cache_builds_each_key_once_and_returns_the_same_bytes():
    cache = BurstCache(max_entries=4)
    builds = []

    def build(key):
        def make() -> bytes:
            builds.append(key)
            return encode_ticks({"stream": "s", "seq": key[0]}, 8, frames_bytes(*key[:2]), key[3])

        return make

    key = (0, 8, FULL, "deflate")
    first = cache.get(key, build(key))
    assert cache.get(key, build(key)) is first
    other = (0, 8, Shape(every=2), "deflate")
    assert cache.get(other, build(other)) is not first
    assert builds == [key, other] and (cache.hits, cache.misses) == (1, 2)


def test_cache_is_bounded_by_entries_and_bytes():
    cache = BurstCache(max_entries=3, max_bytes=250)
    for i in range(10):
        cache.get(i, lambda: b"x" * 100)
        assert len(cache) <= 2 and cache.bytes <= 250  # 3 entries would be 300 bytes
    assert cache.get("big", lambda: b"y" * 1000) == b"y" * 1000  # built, not kept
    assert "big" not in cache and cache.bytes <= 250
    lru = BurstCache(max_entries=2)
    lru.get("a", lambda: b"a")
    lru.get("b", lambda: b"b")
    lru.get("a", lambda: b"never")  # a is now the most recent
    lru.get("c", lambda: b"c")  # evicts b
    assert lru.get("a", lambda: b"rebuilt") == b"a"
    assert lru.get("b", lambda: b"rebuilt") == b"rebuilt"
    with pytest.raises(ValueError):
        BurstCache(max_entries=0)
