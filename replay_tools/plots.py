"""The report's PNG plots (matplotlib, Agg: no display needed), one per section that has data to draw."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import matplotlib

matplotlib.use("Agg")  # before pyplot: the report is made on headless machines
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.dates import ConciseDateFormatter  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

Section = dict[str, Any]


def _dates(ts: list[float]) -> list[datetime]:
    return [datetime.fromtimestamp(t) for t in ts]  # local time, as the operator's clock shows it


def _hour_labels(hours: list[dict[str, Any]]) -> list[str]:
    return [time.strftime("%d %H:00", time.localtime(h["hour"])) for h in hours]


def _stacked_hours(ax: Any, hours: list[dict[str, Any]], ylabel: str) -> None:
    """Stacked bars per clock hour of every non-'hour' count in `hours`."""
    keys = sorted({k for h in hours for k in h if k != "hour"})
    labels = _hour_labels(hours)
    bottom = [0] * len(hours)
    for k in keys:
        vals = [h.get(k, 0) for h in hours]
        ax.bar(labels, vals, bottom=bottom, label=k)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_ylabel(ylabel)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", rotation=60, labelsize=7)


def eval_success(sec: Section, ax: Any) -> None:
    rows = sec["rows"]
    labels = [f"v{r['version']}" for r in rows]
    bars = ax.bar(labels, [r["success_rate"] for r in rows], color="tab:green")
    for bar, r in zip(bars, rows, strict=True):
        ax.annotate(f"{r['successes']}/{r['episodes']}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("forward success rate")
    ax.set_xlabel("policy version")


def _bars_and_count_per_hour(
    ax: Any, hours: list[dict[str, Any]], bars: tuple[list[float], str, str, str], count: tuple[str, str, str]
) -> None:
    """Per clock hour, bars of one figure on the left axis and a count as a line on a right axis:
    `bars` is (values, colour, legend label, axis label), `count` is (key in each hour, colour, label)."""
    labels = _hour_labels(hours)
    values, bar_color, bar_label, ylabel = bars
    key, line_color, line_label = count
    ax.bar(labels, values, color=bar_color, label=bar_label)
    ax.set_ylabel(ylabel)
    twin = ax.twinx()
    twin.plot(labels, [h[key] for h in hours], "o-", color=line_color, label=line_label)
    twin.set_ylabel(line_label)
    twin.set_ylim(bottom=0)
    ax.tick_params(axis="x", rotation=60, labelsize=7)
    ax.legend(loc="upper left", fontsize=8)
    twin.legend(loc="upper right", fontsize=8)


def practice(sec: Section, ax: Any) -> None:
    hours = sec["hours"]
    rate = [h["human_minutes_per_practice_hour"] or 0.0 for h in hours]
    _bars_and_count_per_hour(ax, hours, (rate, "tab:orange", "human minutes per practice hour", "human min / practice h"),
                             ("interventions", "tab:blue", "interventions"))


def recoveries(sec: Section, ax: Any) -> None:
    _stacked_hours(ax, sec["hours"], "practice segments cut by the arm")


def help_requests(sec: Section, ax: Any) -> None:
    _stacked_hours(ax, sec["hours"], "help requests")


def tick_health(sec: Section, ax: Any) -> None:
    hours = sec["hours"]
    p99 = [h["p99_error_ms"] for h in hours]
    _bars_and_count_per_hour(ax, hours, (p99, "tab:purple", "p99 period error (ms)", "p99 period error (ms)"),
                             ("missed_ticks", "tab:red", "missed ticks"))


def checkpoint_swaps(sec: Section, ax: Any) -> None:
    for direction in ("forward", "backward"):
        swaps = [s for s in sec["swaps"] if s["direction"] == direction]
        if swaps:
            # Each version's line runs until the next swap, the last one until its last step.
            ts = [s["at"] for s in swaps] + [sec["last_acted_at"][direction]]
            versions = [s["to"] for s in swaps] + [swaps[-1]["to"]]
            ax.step(_dates(ts), versions, where="post", label=direction)
            ax.plot(_dates(ts[:-1]), versions[:-1], "o", color=ax.lines[-1].get_color())
    _time_axis(ax)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("policy version acting")
    ax.legend(fontsize=8)


def classifier_scores(sec: Section, ax: Any) -> None:
    # Probabilities and accuracies share the 0..1 scale; losses stay in report.json.
    for tag, points in sec["series"].items():
        if points and (tag.endswith("prob") or tag.endswith("accuracy") or "goal_score" in tag):
            ax.plot(_dates([p["time"] for p in points]), [p["value"] for p in points], ".-", label=tag, lw=1)
    _time_axis(ax)
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("probability / accuracy")
    ax.legend(fontsize=7)


def labelled_fp_fn(sec: Section, ax: Any) -> None:
    items = sec["items"]
    for ok, color, name in ((True, "tab:green", "label: goal"), (False, "tab:red", "label: not goal")):
        xs = [i for i, it in enumerate(items) if it["goal"] == ok]
        ax.scatter(xs, [items[i]["score"] for i in xs], color=color, label=name, s=12)
    ax.axhline(sec.get("threshold", 0.5), color="grey", ls="--", lw=1)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("labelled frame (by episode, then frame)")
    ax.set_ylabel("p_goal")
    ax.legend(fontsize=8)


def _time_axis(ax: Any) -> None:
    ax.xaxis.set_major_formatter(ConciseDateFormatter(ax.xaxis.get_major_locator()))


PLOTS: dict[str, Callable[[Section, Any], None]] = {
    "eval_success": eval_success,
    "practice": practice,
    "recoveries": recoveries,
    "help_requests": help_requests,
    "tick_health": tick_health,
    "checkpoint_swaps": checkpoint_swaps,
    "classifier_scores": classifier_scores,
    "labelled_fp_fn": labelled_fp_fn,
}


def has_plot(sec: Section) -> bool:
    """Only sections with something to draw get a PNG (a chart of zeros says less than the numbers)."""
    return bool(sec.get("recorded")) and any(sec.get(k) for k in ("rows", "hours", "swaps", "series", "items"))


def plot_pngs(sections: dict[str, Section]) -> dict[str, bytes]:
    """One PNG per section that has data to draw: {section name: PNG bytes}."""
    pngs = {}
    for name, sec in sections.items():
        if not has_plot(sec):
            continue
        fig, ax = plt.subplots(figsize=(8, 3.6), layout="constrained")
        try:
            PLOTS[name](sec, ax)
            ax.set_title(sec["title"], fontsize=10)
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=100)
            pngs[name] = buf.getvalue()
        finally:
            plt.close(fig)
    return pngs
