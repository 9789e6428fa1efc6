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


def _bin_labels(sec: Section) -> list[str]:
    """Each bin's start on the local clock: the day too when the bins span more than one day."""
    starts = [b["start"] for b in sec["bins"]]
    days = {time.strftime("%d", time.localtime(t)) for t in starts}
    fmt = ("%d " if len(days) > 1 else "") + ("%H:00" if sec["bin_s"] >= 3600 else "%H:%M")
    return [time.strftime(fmt, time.localtime(t)) for t in starts]


def _bin_axis(ax: Any, sec: Section) -> None:
    day = time.strftime("%Y-%m-%d", time.localtime(sec["bins"][0]["start"]))
    ax.set_xlabel(f"{sec['bin']} bins from {day}, local time of each bin's start", fontsize=8)
    ax.tick_params(axis="x", rotation=60 if len(sec["bins"]) > 8 else 0, labelsize=7)


def _from_zero(ax: Any, values: list[float], integer: bool = False) -> None:
    """A count or a length starts at 0; with every value 0 the axis still runs to 1, not ±0.04."""
    top = max([v for v in values if v is not None], default=0)
    ax.set_ylim(0, top * 1.15 if top > 0 else 1)
    if integer:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _legend_outside(ax: Any, handles: list[Any] | None = None, labels: list[str] | None = None) -> None:
    """The legend right of the axes, never over the data (constrained layout makes room for it)."""
    args = () if handles is None else (handles, labels)
    ax.legend(*args, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0, fontsize=8)


def _stacked_bins(ax: Any, sec: Section, ylabel: str) -> None:
    """Stacked bars per bin of every count in the section's bins."""
    bins = sec["bins"]
    keys = sorted({k for b in bins for k in b if k != "start"})
    labels = _bin_labels(sec)
    bottom = [0] * len(bins)
    for k in keys:
        vals = [b.get(k, 0) for b in bins]
        ax.bar(labels, vals, bottom=bottom, label=k)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_ylabel(ylabel)
    _from_zero(ax, bottom, integer=True)
    _bin_axis(ax, sec)
    _legend_outside(ax)


def eval_success(sec: Section, ax: Any) -> None:
    rows = sec["rows"]
    labels = [f"v{r['version']}" for r in rows]
    # A pale full-height bar per version: a 0/5 version reads as an empty box, not as no bar at all.
    ax.bar(labels, [1.0] * len(rows), color="none", edgecolor="0.75", linestyle="--", label="all episodes")
    bars = ax.bar(labels, [r["success_rate"] for r in rows], color="tab:green", label="successes")
    for bar, r in zip(bars, rows, strict=True):
        ax.annotate(f"{r['successes']}/{r['episodes']} = {r['success_rate']:.0%}",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()), xytext=(0, 3),
                    textcoords="offset points", ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("forward success rate")
    ax.set_xlabel("policy version (eval sessions)")
    _legend_outside(ax)


def _bars_and_counts(ax: Any, sec: Section, bars: tuple[list[float], str, str],
                     counts: list[tuple[str, str, str]], count_label: str) -> Any:
    """Per bin, bars of one figure on the left axis and counts as lines on a right axis (both from 0):
    `bars` is (values, colour, label), `counts` is [(key in each bin, colour, label)]; one legend
    for both, outside the axes. Returns the right axis."""
    bins = sec["bins"]
    labels = _bin_labels(sec)
    values, bar_color, bar_label = bars
    ax.bar(labels, values, color=bar_color, label=bar_label)
    ax.set_ylabel(bar_label)
    _from_zero(ax, values)
    twin = ax.twinx()
    for key, color, label in counts:
        twin.plot(labels, [b[key] for b in bins], "o-", color=color, label=label, ms=4)
    twin.set_ylabel(count_label)
    _from_zero(twin, [b[key] for b in bins for key, _, _ in counts], integer=True)
    _bin_axis(ax, sec)
    handles, names = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    # A figure legend: constrained layout puts it right of the right axis' label, whatever its width.
    ax.figure.legend(handles + more[0], names + more[1], loc="outside right upper", fontsize=8)
    return twin


def practice(sec: Section, ax: Any) -> None:
    rate = [b["human_minutes_per_practice_hour"] or 0.0 for b in sec["bins"]]
    _bars_and_counts(ax, sec, (rate, "tab:orange", "human min / practice h"),
                     [("interventions", "tab:blue", "interventions")], "interventions")
    if not sec["interventions"] and not sec["human_minutes"]:
        ax.text(0.5, 0.6, f"0 interventions, 0 human minutes in {sec['practice_hours'] * 60:.1f} min of practice",
                transform=ax.transAxes, ha="center", va="center", fontsize=10, color="0.3")


def recoveries(sec: Section, ax: Any) -> None:
    _stacked_bins(ax, sec, "practice segments cut by the arm")


def help_requests(sec: Section, ax: Any) -> None:
    _stacked_bins(ax, sec, "help requests")


def tick_health(sec: Section, ax: Any) -> None:
    p99 = [b["p99_error_ms"] for b in sec["bins"]]
    if sec.get("source") == "loop":
        _bars_and_counts(ax, sec, (p99, "tab:purple", "p99 period error (ms)"),
                         [("late", "tab:orange", "late ticks"), ("skipped", "tab:red", "skipped ticks")],
                         "late / skipped ticks")
    else:
        _bars_and_counts(ax, sec, (p99, "tab:purple", "p99 period error (ms)"),
                         [("late", "tab:orange", "late intervals"), ("missed_ticks", "tab:red", "missed ticks")],
                         "late intervals / missed ticks")
    ax.set_title(f"{sec['title']} ({TICK_SOURCES.get(sec.get('source', ''), 'source unknown')})", fontsize=10)


# What the tick-health plot says it was computed from (report.py: the section's `source`).
TICK_SOURCES = {"loop": "the control loop's own timing",
                "step timestamps": "from step timestamps, which include the tick's work time"}


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
    acting = sorted({s["to"] for s in sec["swaps"]})
    if len(acting) <= 12:  # few versions: tick exactly those (v100, v200, ...), not a round 80, 160, ...
        ax.set_yticks(acting)
    else:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("policy version acting")
    ax.set_xlabel("local time", fontsize=8)
    ax.legend(fontsize=8)


CLASSIFIERS = {"forward": "goal classifier (forward)", "backward": "state-matching classifier (backward)"}


def _classifier_series(sec: Section, direction: str) -> dict[str, list[dict[str, float]]]:
    """The 0..1 series of one classifier, by a short name: probabilities, accuracies and the goal scores
    stored with eval verdicts (forward); losses and labelled-set rates stay in report.json."""
    out = {}
    for tag, points in sec["series"].items():
        if not points:
            continue
        if tag.startswith(f"clf_{direction}/") and tag.endswith(("prob", "accuracy")):
            out[tag.split("/", 1)[1]] = points
        elif direction == "forward" and "goal_score" in tag:
            out[tag] = points
    return out


def classifier_panels(sec: Section) -> list[str]:
    return [d for d in CLASSIFIERS if _classifier_series(sec, d)]


def classifier_scores(sec: Section, axes: list[Any]) -> None:
    for ax, direction in zip(axes, classifier_panels(sec), strict=True):
        for name, points in _classifier_series(sec, direction).items():
            ls = "--" if name.endswith("accuracy") else "-"  # accuracies dashed, probabilities solid
            ax.plot(_dates([p["time"] for p in points]), [p["value"] for p in points], ls=ls, marker=".",
                    ms=3, label=name, lw=1)
        ax.set_ylim(-0.05, 1.05)
        ax.set_ylabel("probability / accuracy", fontsize=8)
        ax.set_title(CLASSIFIERS[direction], fontsize=9)
        _time_axis(ax)
        _legend_outside(ax)
    axes[-1].set_xlabel("local time", fontsize=8)


def labelled_fp_fn(sec: Section, ax: Any) -> None:
    items = sec["items"]
    threshold = sec.get("threshold", 0.5)
    # FN: a goal frame below the line; FP: a not-goal frame on or above it.
    for ok, color, name, wrong in ((True, "tab:green", "goal", "FN"), (False, "tab:red", "not goal", "FP")):
        xs = [i for i, it in enumerate(items) if it["goal"] == ok]
        ax.scatter(xs, [items[i]["score"] for i in xs], color=color, s=14,
                   label=f"label {name}: {len(xs)} ({sec['fn'] if ok else sec['fp']} {wrong})")
    ax.axhline(threshold, color="grey", ls="--", lw=1, label=f"says goal ≥ {threshold:g}")
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("p_goal")
    if 0 < len(items) <= 30:  # few enough to name: episode and frame under each point
        ax.set_xticks(range(len(items)), [f"{it['episode']}:{it['frame']}" for it in items], rotation=60, fontsize=7)
        ax.set_xlabel("labelled frame (episode:frame)", fontsize=8)
    else:
        ax.set_xlabel("labelled frame (by episode, then frame)", fontsize=8)
    _legend_outside(ax)


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


# Plots with one panel per part (the classifiers); the others draw on one axis.
PANELS: dict[str, Callable[[Section], list[str]]] = {"classifier_scores": classifier_panels}


def has_plot(sec: Section) -> bool:
    """Only sections with something to draw get a PNG (a chart of zeros says less than the numbers)."""
    return bool(sec.get("recorded")) and any(sec.get(k) for k in ("rows", "bins", "swaps", "series", "items"))


def plot_figure(name: str, sec: Section) -> Any:
    """The section's matplotlib figure (close it after use), or None when it has nothing to draw."""
    if not has_plot(sec):
        return None
    panels = len(PANELS[name](sec)) if name in PANELS else 1
    if panels == 0:
        return None
    fig, axes = plt.subplots(panels, 1, figsize=(8, 3.6 if panels == 1 else 2.4 * panels + 0.6),
                             layout="constrained", sharex=True, squeeze=False)
    axes = list(axes[:, 0])
    try:
        PLOTS[name](sec, axes if name in PANELS else axes[0])
        if panels == 1 and name not in PANELS:
            if not axes[0].get_title():  # a plot may title itself (tick health names its source)
                axes[0].set_title(sec["title"], fontsize=10)
        else:
            fig.suptitle(sec["title"], fontsize=10)
    except BaseException:
        plt.close(fig)
        raise
    return fig


def plot_pngs(sections: dict[str, Section]) -> dict[str, bytes]:
    """One PNG per section that has data to draw: {section name: PNG bytes}."""
    pngs = {}
    for name, sec in sections.items():
        fig = plot_figure(name, sec)
        if fig is None:
            continue
        try:
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=100)
            pngs[name] = buf.getvalue()
        finally:
            plt.close(fig)
    return pngs
