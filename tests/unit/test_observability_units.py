"""Observability's pure parts: request ids from hostile headers, histogram buckets, log lines."""

from __future__ import annotations

import json
import logging
import re

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from gateway.observability import request_id_from
from gateway.telemetry import LatencyHistogram
from shared.logs import JsonFormatter, log_context

SAFE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@given(st.text(max_size=400) | st.from_regex(r"[A-Za-z0-9._:-]{1,200}", fullmatch=True))
def test_a_request_id_is_always_bounded_and_safe_and_a_sane_one_is_kept(header: str) -> None:
    made = request_id_from(header, max_chars=128)
    assert SAFE.fullmatch(made)
    assert (made == header) == bool(SAFE.fullmatch(header))


def test_no_header_gets_a_fresh_id_each_time() -> None:
    assert request_id_from(None, max_chars=128) != request_id_from(None, max_chars=128)


class _One(Collector):
    def __init__(self, histogram: LatencyHistogram) -> None:
        self.histogram = histogram

    def collect(self) -> list[HistogramMetricFamily]:  # type: ignore[override]
        return [
            HistogramMetricFamily(
                "h", "test", buckets=self.histogram.cumulative(), sum_value=self.histogram.total
            )
        ]


@given(st.lists(st.floats(min_value=0, max_value=10, allow_nan=False), max_size=50))
def test_histogram_buckets_count_each_value_under_every_bound_it_fits(values: list[float]) -> None:
    histogram = LatencyHistogram((0.001, 0.01, 0.1, 1.0))
    for value in values:
        histogram.observe(value)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_One(histogram))
    parsed = {
        (sample.name, sample.labels.get("le")): sample.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
    }
    for bound in ("0.001", "0.01", "0.1", "1.0"):
        assert parsed[("h_bucket", bound)] == sum(1 for v in values if v <= float(bound))
    assert parsed[("h_bucket", "+Inf")] == parsed[("h_count", None)] == len(values)
    assert abs(parsed[("h_sum", None)] - sum(values)) < 1e-6


def test_a_json_line_is_one_object_with_the_ids_in_context() -> None:
    record = logging.LogRecord(
        "boardcast.test", logging.WARNING, __file__, 1, "a\nb %s", ("c",), None
    )
    with log_context(request_id="r1", board_id="b1", connection_id=7, user_id="ann"):
        line = JsonFormatter().format(record)
    outside = json.loads(JsonFormatter().format(record))
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "a\nb c" and parsed["level"] == "WARNING"
    assert parsed["logger"] == "boardcast.test" and parsed["timestamp"].endswith("Z")
    assert (parsed["request_id"], parsed["board_id"], parsed["connection_id"]) == ("r1", "b1", 7)
    assert parsed["user_id"] == "ann"
    assert "request_id" not in outside  # reset once the context ends
