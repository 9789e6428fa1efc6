"""Wall-clock intervals (start, end) in epoch seconds: union, intersection and clock-hour buckets.

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


def hour_of(t: float) -> float:
    """The start of the clock hour holding `t` (epoch hours: local hours in whole-hour time zones)."""
    return (t // HOUR_S) * HOUR_S


def seconds_per_hour(intervals: Iterable[Interval]) -> dict[float, float]:
    """Seconds covered in each clock hour, keyed by the hour's start."""
    out: dict[float, float] = {}
    for start, end in union(intervals):
        t = start
        while t < end:
            hour = hour_of(t)
            stop = min(end, hour + HOUR_S)
            out[hour] = out.get(hour, 0.0) + (stop - t)
            t = stop
    return out


def hours_between(first: float, last: float) -> list[float]:
    """Every clock hour from the one holding `first` to the one holding `last`."""
    hours, h = [], hour_of(first)
    while h <= last:
        hours.append(h)
        h += HOUR_S
    return hours
