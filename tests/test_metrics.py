"""``/metrics`` as Prometheus reads it: parsed with prometheus-client's own parsers.

Each family must own only its own sample names (a gauge ``x`` next to a counter ``x_total`` is
one family to the parser, the bug the hand-written exposition had), values must come back as
counted, and label values from untrusted names must come back unchanged.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from pathlib import Path

import msgpack
from conftest import require_module
from gsi_posts import keep_posting, sample_count, scrape
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from server.metrics import DELIVERY_BUCKETS, LAG_BUCKETS, Metrics

# Sample name suffixes each metric type may carry (Prometheus text format).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "info": ("_info",),
}
TOKEN = "match-token"
HOSTILE = 'a"b\\c\nd}{="'


def _families(metrics: Metrics) -> dict:
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain; version=0.0.4")
    families = list(text_string_to_metric_families(body.decode()))
    names = [f.name for f in families]
    assert len(names) == len(set(names)), f"a family appears twice: {names}"
    return {f.name: f for f in families}


def _busy_metrics() -> Metrics:
    metrics = Metrics()
    metrics.connections = 3
    metrics.connections_total = 41
    metrics.refused["server_full"] += 2
    metrics.sent("generated", 8, 1200)
    metrics.sent("generated", 8, 1100)
    metrics.frame_counter("match1")(5)
    metrics.skips["generated"] += 1
    metrics.skipped_frames["generated"] += 64
    metrics.slow_disconnects["generated"] += 1
    metrics.protocol_errors["bad_field"] += 4
    metrics.ingest_posts["match1"] += 7
    metrics.ingest_errors["bad_json"] += 1
    metrics.subscriber_counts = lambda: {"generated": 12, "match1": 0}
    return metrics


def _value(family, **labels: str) -> float:
    [sample] = [s for s in family.samples if s.labels == labels and not s.name.endswith("_created")]
    return sample.value


def test_every_family_owns_only_its_own_samples() -> None:
    families = _families(_busy_metrics())
    for name, family in families.items():
        allowed = {name + suffix for suffix in SUFFIXES[family.type]}
        stray = {s.name for s in family.samples} - allowed
        assert not stray, f"{name} ({family.type}) holds samples of another metric: {stray}"


def test_open_connections_and_accepted_connections_are_separate_families() -> None:
    families = _families(_busy_metrics())
    assert families["eeict_open_connections"].type == "gauge"
    assert _value(families["eeict_open_connections"]) == 3
    assert families["eeict_connections"].type == "counter"
    assert _value(families["eeict_connections"]) == 41


def test_counters_come_back_as_counted() -> None:
    families = _families(_busy_metrics())
    expected = {
        ("eeict_connections_refused", "reason", "server_full"): 2,
        ("eeict_frames_sent", "stream", "generated"): 16,
        ("eeict_frames_sent", "stream", "match1"): 5,
        ("eeict_bytes_sent", "stream", "generated"): 2300,
        ("eeict_messages_sent", "stream", "generated"): 2,
        ("eeict_slow_skips", "stream", "generated"): 1,
        ("eeict_skipped_frames", "stream", "generated"): 64,
        ("eeict_slow_disconnects", "stream", "generated"): 1,
        ("eeict_protocol_errors", "code", "bad_field"): 4,
        ("eeict_ingest_posts", "match", "match1"): 7,
        ("eeict_ingest_errors", "reason", "bad_json"): 1,
        ("eeict_subscribers", "stream", "generated"): 12,
        ("eeict_subscribers", "stream", "match1"): 0,
    }
    for (family, label, key), value in expected.items():
        assert _value(families[family], **{label: key}) == value, (family, key)
    assert families["eeict_frames_sent"].type == "counter"
    assert families["eeict_subscribers"].type == "gauge"


def test_histograms_are_cumulative_with_sum_and_count() -> None:
    metrics = Metrics()
    lags = [0.0005, 0.003, 0.003, 0.2, 7.0]
    delays = [0.04, 0.3, 0.3, 12.0]
    for lag in lags:
        metrics.observe_lag(lag)
    for delay in delays:
        metrics.observe_delivery_delay(delay)
    families = _families(metrics)
    for name, bounds, observed in (
        ("eeict_send_lag_seconds", LAG_BUCKETS, lags),
        ("eeict_delivery_delay_seconds", DELIVERY_BUCKETS, delays),
    ):
        family = families[name]
        assert family.type == "histogram"
        buckets = {s.labels["le"]: s.value for s in family.samples if s.name == name + "_bucket"}
        for bound in bounds:
            assert buckets[repr(float(bound))] == sum(v <= bound for v in observed), (name, bound)
        assert buckets["+Inf"] == len(observed)
        assert _value_named(family, name + "_count") == len(observed)
        assert math.isclose(_value_named(family, name + "_sum"), sum(observed))


def _value_named(family, sample_name: str) -> float:
    [sample] = [s for s in family.samples if s.name == sample_name]
    return sample.value


def test_label_values_from_untrusted_names_are_escaped() -> None:
    metrics = Metrics()
    metrics.sent(HOSTILE, 1, 10)
    metrics.ingest_posts[HOSTILE] += 1
    families = _families(metrics)
    assert _value(families["eeict_frames_sent"], stream=HOSTILE) == 1
    assert _value(families["eeict_ingest_posts"], match=HOSTILE) == 1


def test_process_metrics_are_exposed() -> None:
    families = _families(Metrics())
    assert _value(families["process_resident_memory_bytes"]) > 0
    assert _value(families["process_open_fds"]) > 0
    assert _value(families["process_start_time_seconds"]) > 1_600_000_000
    assert families["process_cpu_seconds"].type == "counter"
    assert "python_info" in families


def test_openmetrics_when_the_scraper_asks_for_it() -> None:
    body, content_type = _busy_metrics().exposition("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    families = {f.name: f for f in parse_openmetrics(body.decode())}
    assert _value(families["eeict_connections"]) == 41
    assert _value(families["eeict_open_connections"]) == 3


def test_scrapes_see_later_counts() -> None:
    metrics = Metrics()
    assert _value(_families(metrics)["eeict_connections"]) == 0
    metrics.connections_total += 1
    metrics.sent("late", 2, 20)
    families = _families(metrics)
    assert _value(families["eeict_connections"]) == 1
    assert _value(families["eeict_frames_sent"], stream="late") == 2


# --- the Grafana dashboard queries what the server exposes ---------------------------------

DASHBOARD = (
    Path(__file__).resolve().parents[1] / "openshift" / "monitoring" / "grafana-dashboard.json"
)


def _dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]


def test_dashboard_queries_only_metrics_and_labels_the_server_exposes() -> None:
    families = _families(_busy_metrics())
    samples = {s.name: f for f in families.values() for s in f.samples}
    labels = {name: {k for s in f.samples for k in s.labels} for name, f in samples.items()}
    # Prometheus adds these to every scraped series.
    target_labels = {"job", "pod", "instance", "namespace", "le"}
    for title, expr in _dashboard_queries():
        names = re.findall(r"\b((?:eeict|process)_[a-z_]+)\b", expr)
        assert names, title
        for name in names:
            assert name in samples, f"{title}: {name} is not exposed"
            for group in re.findall(r"by \(([^)]*)\)", expr):
                for label in (x.strip() for x in group.split(",")):
                    assert label in labels[name] | target_labels, f"{title}: no label {label}"


def test_dashboard_has_the_panels_an_operator_watches() -> None:
    exprs = " ".join(expr for _, expr in _dashboard_queries())
    for needed in (
        "eeict_open_connections",
        "eeict_subscribers",
        "rate(eeict_frames_sent_total",
        "histogram_quantile(0.99, sum by (le) (rate(eeict_send_lag_seconds_bucket",
        "eeict_slow_skips_total",
        "eeict_slow_disconnects_total",
        "eeict_ingest_posts_total",
        "eeict_ingest_errors_total",
    ):
        assert needed in exprs, needed


SERVICEMONITOR = DASHBOARD.parents[1] / "base" / "servicemonitor.yaml"
_SECONDS = {"s": 1, "m": 60, "h": 3600}


def _seconds(duration: str) -> int:
    """A Prometheus duration such as "30s", "2m" or "1h" in seconds."""
    match = re.fullmatch(r"(\d+)([smh])", duration)
    assert match, f"not a duration this dashboard uses: {duration!r}"
    return int(match[1]) * _SECONDS[match[2]]


def test_dashboard_rate_windows_hold_at_least_four_scrapes() -> None:
    """A window shorter than a few scrape intervals holds one sample or none after a missed
    scrape, and rate() draws gaps; Grafana's own rule of thumb is 4 intervals."""
    yaml = require_module("yaml", "install the test extra (pip install -e '.[test]')")
    [interval] = {_seconds(e["interval"]) for e in yaml.safe_load(SERVICEMONITOR.read_text())
                  ["spec"]["endpoints"]}  # fmt: skip
    windows = 0
    for title, expr in _dashboard_queries():
        calls = re.findall(r"\b(?:rate|irate|increase)\(([^()]*)\)", expr)
        for argument in calls:
            window = re.fullmatch(r".*\[([^\]]+)\]", argument)
            assert window, f"{title}: a range function without a window: {expr}"
            assert _seconds(window[1]) >= 4 * interval, f"{title}: [{window[1]}] < 4 x {interval}s"
            windows += 1
    assert windows >= 8, "the counter panels use rate()"


# --- end to end: a live match's frames are timed from post to send ------------------------------


async def test_a_live_subscriber_gets_delivery_delay_samples(start_app, write_tiny) -> None:
    """Posts into an in-process server, a subscriber of the match, and the delay of the frames
    it was sent as /metrics reports it: at least the framer's delay, at most a few seconds."""
    write_tiny("tiny", count=200)
    delay = 0.2
    app = await start_app(live=["tiny"], gsi=[f"m={TOKEN}"], gsi_delay=delay)
    posting = asyncio.create_task(keep_posting(app.http_port, "m", TOKEN))
    frames = 0
    try:
        async with asyncio.timeout(30):
            while frames == 0:  # the stream appears with the first frame made
                async with connect(f"ws://127.0.0.1:{app.port}/live/m") as ws:
                    hello = msgpack.unpackb(await ws.recv())
                    if hello["type"] != "hello":
                        await asyncio.sleep(0.05)
                        continue
                    await ws.send(msgpack.packb({"type": "subscribe", "buffer": 16}))
                    while frames < 64:
                        message = msgpack.unpackb(await ws.recv())
                        if message["type"] == "ticks":
                            frames += len(message["frames"])
    finally:
        posting.cancel()
        [ended] = await asyncio.gather(posting, return_exceptions=True)
    assert isinstance(ended, asyncio.CancelledError), f"posting failed: {ended!r}"
    family = (await scrape(app.http_port))["eeict_delivery_delay_seconds"]
    count = sample_count(family, "eeict_delivery_delay_seconds_count")
    total = sample_count(family, "eeict_delivery_delay_seconds_sum")
    assert count >= frames / 16, f"{count} delays for {frames} frames sent in bursts"
    assert delay <= total / count < 5.0, f"mean delay {total / count:.3f} s"
