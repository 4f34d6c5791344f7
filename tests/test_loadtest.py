"""The load generator's envelope reading and lag histogram (client_examples/loadtest.py).

Runs against real servers are in test_client_examples.py; these check the byte-level parsing
on messages made by the server's own encoders, for every msgpack width seq and count can take.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import msgpack
import pytest

from server import protocol
from server.streams.encoding import encode_ticks

PATH = Path(__file__).resolve().parents[1] / "client_examples" / "loadtest.py"
spec = importlib.util.spec_from_file_location("loadtest", PATH)
loadtest = importlib.util.module_from_spec(spec)
sys.modules["loadtest"] = loadtest  # dataclasses look their module up there
spec.loader.exec_module(loadtest)

FRAME = msgpack.packb({"tick": 1, "players": []})
SEQS = [0, 5, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**40]


@pytest.mark.parametrize("seq", SEQS)
@pytest.mark.parametrize("count", [1, 8, 15, 16, 256])
@pytest.mark.parametrize("encoding", ["deflate", None])
def test_seq_and_count_come_from_the_first_bytes(seq, count, encoding):
    message = encode_ticks({"stream": "match", "seq": seq}, count, FRAME * count, encoding)
    head = message[: loadtest.HEAD]
    assert loadtest.ticks_seq_count(head, loadtest.ticks_prefix("match")) == (seq, count)
    assert loadtest.envelope(message)[0]["seq"] == seq  # the slow path agrees


def test_other_messages_and_other_streams_are_not_taken_for_ticks():
    prefix = loadtest.ticks_prefix("match")
    other_stream = encode_ticks({"stream": "matchX", "seq": 9}, 1, FRAME, "deflate")
    assert loadtest.ticks_seq_count(other_stream[: loadtest.HEAD], prefix) is None
    for message in (
        protocol.pack({"type": "skip", "stream": "match", "from_seq": 1, "to_seq": 9}),
        protocol.pack({"type": "end", "stream": "match", "seq": 9}),
        protocol.ticks_envelope("match", 9, 1, FRAME, gen=2),  # replay: gen before frames
    ):
        assert loadtest.ticks_seq_count(message[: loadtest.HEAD], prefix) is None
    fields, count = loadtest.envelope(protocol.ticks_envelope("match", 9, 1, FRAME, gen=2))
    assert (fields["seq"], fields["gen"], count) == (9, 2, 1)


def test_lag_histogram_spreads_each_burst_over_its_frames():
    args = argparse.Namespace(
        url="ws://127.0.0.1:1", stream="s", encoding="deflate", fields=None, every=1,
        buffer=1.0, token="", duration=1.0,
    )  # fmt: skip
    run = loadtest.Run(args, 1)
    run.step_ms = 1000 / 64
    subscriber = loadtest.Subscriber(run, slow=False)
    subscriber.rate, subscriber.clock, subscriber.current_next = 64.0, 0.0, False
    subscriber.paced_from = 0
    # A burst of 8 from seq 64 (play time 1.0 s) arriving at 1.05 s: lags 50, 34.4, ... -59.4 ms.
    subscriber.first_frames(64, 8, arrival=1.05)
    results = run.finish()
    expected = [round(50 - i * 1000 / 64) for i in range(8)]
    assert sorted(results.lag_ms.elements()) == sorted(expected)
    assert results.late_frames == sum(lag > 0 for lag in (50 - i * 1000 / 64 for i in range(8)))


class Frame:
    """What picows hands a listener: a parsed binary WebSocket frame."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.msg_type = loadtest.BINARY
        self.payload_size = len(payload)

    def get_payload_as_memoryview(self) -> memoryview:
        return memoryview(self.payload)


@pytest.mark.parametrize("first_seq", [0, 200, 70_000, 2**33])
@pytest.mark.parametrize("encoding", ["deflate", None])
def test_subscriber_counts_frames_and_gaps_on_every_path(first_seq, encoding):
    args = argparse.Namespace(
        url="ws://127.0.0.1:1", stream="s", encoding="deflate", fields=None, every=1,
        buffer=1.0, token="", duration=1.0,
    )  # fmt: skip
    run = loadtest.Run(args, 1)
    subscriber = loadtest.Subscriber(run, slow=False)
    subscriber.prefix = loadtest.ticks_prefix("match")
    subscriber.seq_at = 1 + len(subscriber.prefix)
    seqs = [first_seq + 8 * k for k in range(6) if k != 3]  # the burst at k=3 never comes
    for seq in seqs:
        message = encode_ticks({"stream": "match", "seq": seq}, 8, FRAME * 8, encoding)
        subscriber.on_ws_frame(None, Frame(message))
    assert run.results.frames == 8 * len(seqs) and run.results.messages == len(seqs)
    assert run.results.gap_frames == 8 and subscriber.expected == first_seq + 48
