"""Latency histograms kept as plain numbers (a bisect and two list updates an
observation, on the event loop) and turned into a Prometheus family only when scraped:
cheaper than prometheus_client's Histogram (a lock and a bucket loop) on every store
operation and upstream request. Nothing here imports the rest of the gateway, so the
store and the upstream client may use it."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from itertools import accumulate

from prometheus_client.core import HistogramMetricFamily, Metric

#: Upper bounds in seconds for a store operation (a Redis round trip is well under 1 ms;
#: the operation's deadline is 1 s).
STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
#: Upper bounds in seconds for an upstream's answer (its head) and the gateway's own.
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Latency:
    """One histogram family, ``name``, with at most one label."""

    def __init__(
        self, name: str, documentation: str, label: str | None, buckets: tuple[float, ...]
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.label = label
        self.bounds = buckets
        self._le = [repr(float(bound)) for bound in buckets] + ["+Inf"]
        #: label value -> one count per bucket (the last one +Inf), then the sum of seconds.
        self.observed: dict[str, list[float]] = {}
        if label is None:
            # An unlabelled histogram is exposed from the start, its counts zero.
            self.observed[""] = [0] * (len(buckets) + 1) + [0.0]

    def observe(self, elapsed: float, value: str = "") -> None:
        """Count one observation of ``elapsed`` seconds (under the label's ``value``)."""
        histogram = self.observed.get(value)
        if histogram is None:
            histogram = self.observed[value] = [0] * (len(self.bounds) + 1) + [0.0]
        histogram[bisect_left(self.bounds, elapsed)] += 1
        histogram[-1] += elapsed

    def collect(self) -> Iterator[Metric]:
        labels = [] if self.label is None else [self.label]
        family = HistogramMetricFamily(self.name, self.documentation, labels=labels)
        for value, histogram in self.observed.items():
            cumulative = list(accumulate(histogram[:-1]))
            buckets = list(zip(self._le, cumulative, strict=True))
            family.add_metric([] if self.label is None else [value], buckets, histogram[-1])
        yield family


def store_seconds() -> Latency:
    """``jargate_store_seconds{operation}``: each round trip to the store (memory: each
    call), failures included, by the operation it serves."""
    return Latency(
        "jargate_store_seconds",
        "Time a store round trip took, failures included, by the operation it serves",
        "operation",
        STORE_BUCKETS,
    )


def upstream_seconds() -> Latency:
    """``jargate_upstream_seconds``: from sending a request upstream to its answer's head
    (its status and headers), failures included."""
    return Latency(
        "jargate_upstream_seconds",
        "Time from sending a request upstream to its answer's head, failures included",
        None,
        HTTP_BUCKETS,
    )
