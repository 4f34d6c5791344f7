"""Counters and a lag histogram, rendered as Prometheus text for ``/metrics``.

Plain attributes and dicts rather than a metrics library: the hot path increments a few
integers per send, and the exposition format is a dozen lines.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable

LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.connections = 0
        self.connections_total = 0
        self.refused = Counter[str]()  # reason -> count
        self.frames_sent = Counter[str]()  # stream -> frames
        self.bytes_sent = Counter[str]()  # stream -> bytes
        self.messages_sent = Counter[str]()  # stream -> messages
        self.skips = Counter[str]()  # stream -> skip notices
        self.skipped_frames = Counter[str]()
        self.slow_disconnects = Counter[str]()
        self.protocol_errors = Counter[str]()  # error code -> count
        self.lag_counts = [0] * (len(LAG_BUCKETS) + 1)
        self.lag_sum = 0.0
        self.delay_counts = [0] * (len(LAG_BUCKETS) + 1)
        self.delay_sum = 0.0
        self.ingest_posts = Counter[str]()  # match -> accepted posts
        self.ingest_errors = Counter[str]()  # reason -> refused posts
        self.subscriber_counts: Callable[[], dict[str, int]] = dict

    def sent(self, stream: str, frames: int, size: int) -> None:
        self.frames_sent[stream] += frames
        self.bytes_sent[stream] += size
        self.messages_sent[stream] += 1

    def frame_counter(self, stream: str) -> Callable[[int], None]:
        """A callback that adds frames to ``stream``'s count, for code that has no Metrics."""

        def count(frames: int) -> None:
            self.frames_sent[stream] += frames

        return count

    def observe_lag(self, seconds: float) -> None:
        self.lag_counts[bisect.bisect_left(LAG_BUCKETS, seconds)] += 1
        self.lag_sum += seconds

    def observe_delivery_delay(self, seconds: float) -> None:
        self.delay_counts[bisect.bisect_left(LAG_BUCKETS, seconds)] += 1
        self.delay_sum += seconds

    def exposition(self) -> tuple[bytes, str]:
        return self.render().encode(), "text/plain; version=0.0.4"

    def render(self) -> str:
        lines: list[str] = []
        labelled: list[tuple[str, str, str, str, dict[str, int]]] = [
            ("eeict_connections_refused_total", "counter", "Connections refused, by reason.",
             "reason", self.refused),
            ("eeict_subscribers", "gauge", "Subscribers per stream.",
             "stream", self.subscriber_counts()),
            ("eeict_frames_sent_total", "counter", "Frames sent.", "stream", self.frames_sent),
            ("eeict_bytes_sent_total", "counter", "Bytes of tick messages sent.",
             "stream", self.bytes_sent),
            ("eeict_messages_sent_total", "counter", "Tick messages sent.",
             "stream", self.messages_sent),
            ("eeict_slow_skips_total", "counter", "Slow subscribers moved to the live edge.",
             "stream", self.skips),
            ("eeict_skipped_frames_total", "counter", "Frames slow subscribers skipped.",
             "stream", self.skipped_frames),
            ("eeict_slow_disconnects_total", "counter", "Subscribers closed for being stuck.",
             "stream", self.slow_disconnects),
            ("eeict_protocol_errors_total", "counter", "Client messages refused, by error code.",
             "code", self.protocol_errors),
        ]  # fmt: skip
        for name, kind, help_text, value in (
            ("eeict_connections", "gauge", "Open WebSocket connections.", self.connections),
            ("eeict_connections_total", "counter", "Accepted WebSocket connections.",
             self.connections_total),
        ):  # fmt: skip
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"]
        for name, kind, help_text, label, counts in labelled:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            lines += [f'{name}{{{label}="{key}"}} {n}' for key, n in sorted(counts.items())]
        lines.append("# HELP eeict_send_lag_seconds Delay from a burst becoming due to its send.")
        lines.append("# TYPE eeict_send_lag_seconds histogram")
        cumulative = 0
        for bound, count in zip(LAG_BUCKETS, self.lag_counts, strict=False):
            cumulative += count
            lines.append(f'eeict_send_lag_seconds_bucket{{le="{bound}"}} {cumulative}')
        cumulative += self.lag_counts[-1]
        lines.append(f'eeict_send_lag_seconds_bucket{{le="+Inf"}} {cumulative}')
        lines.append(f"eeict_send_lag_seconds_sum {self.lag_sum:.6f}")
        lines.append(f"eeict_send_lag_seconds_count {cumulative}")
        return "\n".join(lines) + "\n"
