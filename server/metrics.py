"""The server's counters, exposed for Prometheus through prometheus-client for ``/metrics``.

The hot path stays plain: sends and skips add to integers and dicts (``Counter``) that the server
code increments directly, and the two histograms are lists of bucket counts. Only a scrape turns
them into metric families, in a custom collector, so nothing per frame goes through the library.
The library then does what a hand-written exposition got wrong: metric families that do not
collide (the open-connections gauge and the accepted-connections counter once shared one family
for Prometheus' parser), escaped label values, and the standard process metrics.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

# Send lag: from a burst becoming due to its send; healthy is well under a tick (15.6 ms).
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Delivery delay of live frames: from the post that produced a frame to its send. It includes
# the framer's fixed interpolation delay, so it is larger than the send lag by design.
# Fine around the live matches' default delay (0.75 s + a burst): its p99 must be readable.
DELIVERY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0, 1.25, 1.5, 2.5, 5.0)


class _Histogram:
    """Bucket counts and a sum: observing is one bisect and two additions."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float, count: int = 1) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += count
        self.sum += value * count

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        buckets = []
        cumulative = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            cumulative += count
            buckets.append((repr(float(bound)), cumulative))
        buckets.append(("+Inf", cumulative + self.counts[-1]))
        return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=self.sum)


class Metrics:
    """Counters the server increments; ``exposition()`` renders them for ``/metrics``.

    Read by a scrape on the event loop's thread, as the counters are written, so a scrape sees
    each counter at one moment without locks.
    """

    def __init__(self) -> None:
        self.connections = 0  # open WebSocket connections
        self.connections_total = 0  # accepted since start
        self.refused = Counter[str]()  # reason -> count
        self.frames_sent = Counter[str]()  # stream -> frames
        self.bytes_sent = Counter[str]()  # stream -> bytes
        self.messages_sent = Counter[str]()  # stream -> messages
        self.skips = Counter[str]()  # stream -> skip notices
        self.skipped_frames = Counter[str]()
        self.slow_disconnects = Counter[str]()
        self.protocol_errors = Counter[str]()  # error code -> count
        self.ingest_posts = Counter[str]()  # match -> accepted GSI posts
        self.ingest_errors = Counter[str]()  # reason -> refused GSI posts
        self.lag = _Histogram(LAG_BUCKETS)
        self.delivery_delay = _Histogram(DELIVERY_BUCKETS)
        self.subscriber_counts: Callable[[], dict[str, int]] = dict
        self.broker_up: Callable[[], bool] = lambda: True
        self.broker_frames_read = Counter[str]()  # stream -> frames this replica read
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        ProcessCollector(registry=self.registry)  # CPU, resident memory, open fds, start time
        PlatformCollector(registry=self.registry)  # python_info: the interpreter version

    def sent(self, stream: str, frames: int, size: int, messages: int = 1) -> None:
        self.frames_sent[stream] += frames
        self.bytes_sent[stream] += size
        self.messages_sent[stream] += messages

    def frame_counter(self, stream: str) -> Callable[[int], None]:
        """A callback that adds frames to ``stream``'s count, for code that has no Metrics."""

        def count(frames: int) -> None:
            self.frames_sent[stream] += frames

        return count

    def observe_lag(self, seconds: float, count: int = 1) -> None:
        """``count`` sends that were ``seconds`` late (a group of subscribers served alike)."""
        # Once per send or group: inlined rather than self.lag.observe(), as cheap as before.
        lag = self.lag
        lag.counts[bisect.bisect_left(lag.bounds, seconds)] += count
        lag.sum += seconds * count

    def observe_delivery_delay(self, seconds: float, count: int = 1) -> None:
        """``count`` live frames sent ``seconds`` after the ingest post they came from."""
        self.delivery_delay.observe(seconds, count)

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The body and Content-Type of a ``/metrics`` answer.

        ``accept`` is the request's Accept header: Prometheus text 0.0.4 without one, and
        OpenMetrics or a newer text version when the scraper asks for it (the library decides).
        """
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type


def _labelled(
    family: CounterMetricFamily | GaugeMetricFamily, counts: dict[str, int]
) -> CounterMetricFamily | GaugeMetricFamily:
    for key, value in sorted(dict(counts).items()):
        family.add_metric([key], value)
    return family


class _Collector:
    """Turns a Metrics' plain counters into metric families at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        yield GaugeMetricFamily(
            "eeict_open_connections", "Open WebSocket connections.", value=m.connections
        )
        yield CounterMetricFamily(
            "eeict_connections", "Accepted WebSocket connections.", value=m.connections_total
        )
        yield GaugeMetricFamily(
            "eeict_broker_up",
            "1 while the broker (Redis with --broker) answers and takes this process's writes.",
            value=int(m.broker_up()),
        )
        labelled: list[tuple[type, str, str, str, dict[str, int]]] = [
            (CounterMetricFamily, "eeict_connections_refused", "Connections refused, by reason.",
             "reason", m.refused),
            (GaugeMetricFamily, "eeict_subscribers", "Subscribers per stream.",
             "stream", m.subscriber_counts()),
            (CounterMetricFamily, "eeict_frames_sent", "Frames sent.", "stream", m.frames_sent),
            (CounterMetricFamily, "eeict_bytes_sent", "Bytes of tick messages sent.",
             "stream", m.bytes_sent),
            (CounterMetricFamily, "eeict_messages_sent", "Tick messages sent.",
             "stream", m.messages_sent),
            (CounterMetricFamily, "eeict_slow_skips", "Slow subscribers moved to the live edge.",
             "stream", m.skips),
            (CounterMetricFamily, "eeict_skipped_frames", "Frames slow subscribers skipped.",
             "stream", m.skipped_frames),
            (CounterMetricFamily, "eeict_slow_disconnects", "Subscribers closed for being stuck.",
             "stream", m.slow_disconnects),
            (CounterMetricFamily, "eeict_protocol_errors",
             "Client messages refused, by error code.", "code", m.protocol_errors),
            (CounterMetricFamily, "eeict_ingest_posts", "GSI posts accepted, by match.",
             "match", m.ingest_posts),
            (CounterMetricFamily, "eeict_ingest_errors", "GSI posts refused, by reason.",
             "reason", m.ingest_errors),
            (CounterMetricFamily, "eeict_broker_frames_read",
             "Frames of live matches this replica read from the broker.", "stream",
             m.broker_frames_read),
        ]  # fmt: skip
        for kind, name, documentation, label, counts in labelled:
            yield _labelled(kind(name, documentation, labels=[label]), counts)
        yield m.lag.family("eeict_send_lag_seconds", "Delay from a burst becoming due to its send.")
        yield m.delivery_delay.family(
            "eeict_delivery_delay_seconds",
            "Delay of live frames from the ingest post they came from to their send.",
        )
