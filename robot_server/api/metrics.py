"""Prometheus metrics, read from the daemon's status snapshot at scrape time (no per-tick cost)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class DaemonCollector(Collector):
    def __init__(self, daemon) -> None:
        self.daemon = daemon

    def collect(self):
        st = self.daemon.status()
        tick = st.get("tick") or {}
        for key in ("ticks", "late", "skipped", "overruns", "stale_frames", "invalid_actions"):
            yield CounterMetricFamily(f"robot_tick_{key}", f"control loop: {key.replace('_', ' ')}",
                                      value=tick.get(key, 0))
        for key in ("period_error_ms_p50", "period_error_ms_p99", "period_error_ms_max", "work_ms_p50",
                    "work_ms_p99", "frame_age_ms_p99"):
            yield GaugeMetricFamily(f"robot_tick_{key}", f"control loop: {key.replace('_', ' ')}",
                                    value=tick.get(key, 0.0))
        yield GaugeMetricFamily("robot_control_loop_up", "1 while the control thread runs",
                                value=1.0 if st.get("control_loop_alive") else 0.0)
        counters = st.get("counters") or {}
        for key, value in counters.items():
            yield CounterMetricFamily(f"robot_{key}", f"operator-facing counter: {key}", value=value)
        arm = st.get("arm") or {}
        for key in ("reflexes", "recoveries", "failed_recoveries", "homings"):
            yield CounterMetricFamily(f"robot_arm_{key}", f"arm: {key}", value=arm.get(key, 0) or 0)
        store = st.get("store") or {}
        yield CounterMetricFamily("robot_store_steps_written", "steps appended to the replay store",
                                  value=store.get("steps_written", 0))
        yield CounterMetricFamily("robot_store_episodes_closed", "episodes closed in the replay store",
                                  value=store.get("episodes_closed", 0))
        yield GaugeMetricFamily("robot_store_backlog", "steps waiting for the writer thread",
                                value=store.get("backlog", 0))
        pol = GaugeMetricFamily("robot_policy_version", "active policy version (-1: none)", labels=["direction"])
        for d in ("forward", "backward"):
            p = (st.get("policies") or {}).get(d)
            pol.add_metric([d], p["version"] if p else -1)
        yield pol
        cams = CounterMetricFamily("robot_camera_resets", "camera hardware resets", labels=["camera"])
        frames = CounterMetricFamily("robot_camera_frames", "frames received", labels=["camera"])
        for name, cs in (st.get("cameras") or {}).items():
            cams.add_metric([name], cs.get("resets", 0))
            frames.add_metric([name], cs.get("frames", 0))
        yield cams
        yield frames
        sess = st.get("session") or {}
        yield GaugeMetricFamily("robot_session_steps", "steps in the current session",
                                value=sess.get("total_steps", 0))
        yield GaugeMetricFamily("robot_help_requests", "open help requests",
                                value=len(st.get("help_requests") or []))


def render_metrics(daemon) -> tuple[bytes, str]:
    reg = getattr(daemon, "_metrics_registry", None)
    if reg is None:
        reg = CollectorRegistry()
        reg.register(DaemonCollector(daemon))
        daemon._metrics_registry = reg
    return generate_latest(reg), CONTENT_TYPE_LATEST
