"""Wall-clock intervals (start, end) in epoch seconds: union, intersection and time bins
(clock hours, or minutes for a short recording).

The report's time figures (practice hours, human minutes) are lengths of unions of intervals, so
an overlap (a takeover during an open help request) is never counted twice.
"""

from __future__ import annotations

from collections.abc import Iterable

Interval = tuple[float, float]
HOUR_S = 3600.0


def union(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, non-overlapping intervals covering the same time; empty ones are dropped."""
    out: list[Interval] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def intersect(a: Iterable[Interval], b: Iterable[Interval]) -> list[Interval]:
    """The time covered by both `a` and `b`."""
    ua, ub = union(a), union(b)
    out: list[Interval] = []
    i = j = 0
    while i < len(ua) and j < len(ub):
        start, end = max(ua[i][0], ub[j][0]), min(ua[i][1], ub[j][1])
        if end > start:
            out.append((start, end))
        if ua[i][1] < ub[j][1]:
            i += 1
        else:
            j += 1
    return out


def total(intervals: Iterable[Interval]) -> float:
    """Seconds covered (overlaps counted once)."""
    return sum(end - start for start, end in union(intervals))


# The report's time bins: the smallest of these that splits the store's span into at most MAX_BINS
# bars (a 6-minute demo session: 1-minute bins; a 3-hour one: 10-minute bins; a night: hours).
BIN_CHOICES_S = (60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, HOUR_S)
MAX_BINS = 24


def choose_bin_s(span_s: float) -> float:
    """The bin length (seconds) for figures over `span_s` seconds of recording: hours beyond ~12 h."""
    for bin_s in BIN_CHOICES_S:
        if span_s / bin_s <= MAX_BINS:
            return bin_s
    return HOUR_S


def bin_label(bin_s: float) -> str:
    """'1-minute', '10-minute', '1-hour': how the axes and report.json name a bin."""
    return f"{bin_s / HOUR_S:g}-hour" if bin_s >= HOUR_S else f"{bin_s / 60:g}-minute"


def bin_of(t: float, bin_s: float = HOUR_S) -> float:
    """The start of the bin holding `t`; bins are aligned to the epoch, so hour and 10-minute bins
    start on the local clock's hour and tens of minutes in whole-hour time zones."""
    return (t // bin_s) * bin_s


def seconds_per_bin(intervals: Iterable[Interval], bin_s: float = HOUR_S) -> dict[float, float]:
    """Seconds covered in each bin, keyed by the bin's start."""
    out: dict[float, float] = {}
    for start, end in union(intervals):
        t = start
        while t < end:
            b = bin_of(t, bin_s)
            stop = min(end, b + bin_s)
            out[b] = out.get(b, 0.0) + (stop - t)
            t = stop
    return out


def bins_between(first: float, last: float, bin_s: float = HOUR_S) -> list[float]:
    """Every bin from the one holding `first` to the one holding `last`."""
    bins, b = [], bin_of(first, bin_s)
    while b <= last:
        bins.append(b)
        b += bin_s
    return bins
