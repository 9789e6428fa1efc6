"""The robot server process: devices, control loop, store writer and the operator API, wired once."""

from __future__ import annotations

import logging
import logging.handlers
import queue
import socket
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from camera.base import Camera
from replay.location import store_location
from replay.store import ReplayWriter, StoreMeta
from robot_server.classifier_slots import ClassifierSlots
from robot_server.devices import Devices, build_devices
from robot_server.fault_injection import FaultInjector, InjectSpec
from robot_server.faults import FaultLog
from robot_server.loop import ControlLoop
from robot_server.modes import DemoSource, Mode
from robot_server.observation import Observer
from robot_server.policy_slots import PolicySlots
from robot_server.recorder import Recorder
from robot_server.supervisor import Supervisor
from robot_server.tick_stats import TickStatsWriter
from spec.config import Config
from spec.step import ActionSpace, ObsSpec

log = logging.getLogger(__name__)


def setup_logging(level: int = logging.INFO) -> None:
    """Log through a queue: no thread (the tick least of all) ever blocks on a slow stderr."""
    root = logging.getLogger()
    if any(isinstance(h, logging.handlers.QueueHandler) for h in root.handlers):
        return
    q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    out = logging.StreamHandler(sys.stderr)
    out.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    listener = logging.handlers.QueueListener(q, out)
    listener.start()
    root.handlers[:] = [logging.handlers.QueueHandler(q)]
    root.setLevel(level)


def store_meta(cfg: Config, space: ActionSpace, obs_spec: ObsSpec) -> StoreMeta:
    """The step, described once: readers (learner, replay tools, checkpoint intake) take the
    observation and action specs from this, never from their own copy of the config."""
    by_name = {c.name: c for c in cfg.cameras}
    cams = [
        cam.to_dict()
        | {
            "full_width": by_name[cam.name].width,
            "full_height": by_name[cam.name].height,
            "backend": by_name[cam.name].backend,
            "serial": by_name[cam.name].serial,
        }
        for cam in obs_spec.cameras
    ]
    return StoreMeta(
        robot=cfg.robot,
        rate_hz=cfg.control.rate_hz,
        cameras=cams,
        action_space=space.spec(),
        proprio_dim=obs_spec.proprio_dim,
        state_dim=obs_spec.state_dim,
        extra={"arm_backend": cfg.arm.backend, "workspace": cfg.workspace.model_dump()},
    )


def check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise RuntimeError(f"server.port: cannot listen on {host}:{port} ({exc.strerror})") from None


class Daemon:
    def __init__(self, cfg: Config, config_path: Path | None = None, inject: Sequence[InjectSpec] = ()) -> None:
        from robot_server.teleop import KeyboardTeleop, SpaceMouseReader

        self.cfg = cfg
        self.config_path = config_path  # the YAML file `cfg` came from (calibration writes to it)
        self.space = ActionSpace(cfg.action, cfg.workspace)
        self.devices: Devices = build_devices(cfg)
        # What this robot provides (its views and proprio, plus the sim's state vector): written
        # into the store once, and what checkpoint intake checks policies against.
        self.store_meta = store_meta(cfg, self.space, ObsSpec.from_config(cfg, "pixels", self.devices.state_dim))
        try:
            self.writer = ReplayWriter.open(store_location(cfg.store), self.store_meta, cfg.store.chunk_steps)
        except Exception:
            self.devices.close()
            raise
        self.recorder = Recorder(self.writer, cfg.store)
        self.policies = PolicySlots(cfg.server.checkpoint_dir)
        # The learner's classifiers, for scoring recorded frames on the review page (never the tick).
        self.classifiers = ClassifierSlots(cfg.server.checkpoint_dir, self.store_meta.obs_spec())
        self.keyboard = KeyboardTeleop(self.space)
        self.spacemouse = (
            SpaceMouseReader(cfg.teleop.spacemouse, self.space) if cfg.teleop.spacemouse.enabled else None
        )
        teleops: list[Any] = [t for t in (self.spacemouse, self.keyboard) if t is not None]
        self.faults = FaultLog()
        # Rehearsed faults (--inject): decorators around the devices, put in place once, here.
        self.injector = FaultInjector(inject, self.faults, self.space, arm_backend=cfg.arm.backend)
        try:
            teleops = self.injector.wrap(self.devices, teleops)
        except Exception:
            self.writer.close()
            self.devices.close()
            raise
        self.supervisor = Supervisor(
            cfg,
            self.devices.arm,
            self.recorder,
            self.policies,
            self.space,
            teleops=teleops,
            task=self.devices.task,
            expert=self.devices.expert,
            cameras=self.devices.cameras,
            faults=self.faults,
        )
        state_source = self.devices.state_vector if self.devices.state_dim else None
        self.observer = Observer(
            self.devices.cameras,
            cfg.cameras,
            self.space,
            max_age_s=cfg.control.max_frame_age_ticks / cfg.control.rate_hz,
            state_source=state_source,
        )
        self.loop = ControlLoop(
            self.devices.arm,
            self.devices.cameras,
            self.observer,
            self.supervisor,
            self.policies,
            self.space,
            cfg.control.rate_hz,
            cfg.control.realtime_priority,
            cfg.control.tick_stats_s,
        )
        # The loop's own timing, a window every control.tick_stats_s, into the store's event log.
        self.tick_stats = TickStatsWriter(self.loop.stats, self.recorder)
        self.started_at = time.time()
        self.learner_report: dict[str, Any] | None = None
        self._status_thread: threading.Thread | None = None
        self._stopped = threading.Event()

    @property
    def cameras(self) -> dict[str, Camera]:
        return self.devices.cameras

    def start(self) -> None:
        self.devices.connect()
        for cam in self.devices.cameras.values():
            cam.wait_for_frame(timeout=30.0)
        if self.spacemouse is not None:
            self.spacemouse.start()
        self._restore_policies()
        self.classifiers.restore()
        self.tick_stats.start()
        self.loop.start()
        self.injector.start()
        if self.cfg.control.status_line:
            self._status_thread = threading.Thread(target=self._print_status, name="status-line", daemon=True)
            self._status_thread.start()
        log.info("control loop running at %.1f Hz", self.cfg.control.rate_hz)

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.injector.stop()
        if self.loop.running:
            try:
                self.loop.submit(_wind_down, timeout=5.0)
            except Exception as exc:
                log.warning("could not end the session cleanly: %s", exc)
        self.loop.stop()
        self.tick_stats.stop(loop_stopped=not self.loop.running)
        self.recorder.close()
        if self.spacemouse is not None:
            self.spacemouse.close()
        self.devices.close()
        s = self.loop.stats.summary()
        log.info(
            "stopped after %d ticks: period error p99 %.3f ms, %d late, %d stale frames; %d steps stored",
            s["ticks"], s["period_error_ms_p99"], s["late"], s["stale_frames"], self.recorder.stats.steps,
        )

    def status(self) -> dict[str, Any]:
        """The newest snapshot the control thread published, plus store and teleop state."""
        st = dict(self.loop.snapshot or {"tick": self.loop.stats.summary(), "mode": "starting"})
        st["uptime_s"] = round(time.time() - self.started_at, 1)
        st["store"] = {
            "path": str(self.cfg.store.path),
            "steps_written": self.recorder.stats.steps,
            "events_logged": self.recorder.stats.events_logged,
            "episodes_closed": self.recorder.stats.episodes_closed,
            "backlog": self.recorder.backlog,
            "errors": self.recorder.stats.errors,
            "last_error": self.recorder.stats.last_error,
            "last_episode": self.recorder.stats.last_episode,
            "recording": self.recorder.recording,
            **self.recorder.status(),
        }
        st["teleop"] = {
            "spacemouse": None if self.spacemouse is None else self.spacemouse.status(),
            "keyboard": self.keyboard.status(),
        }
        report = self.learner_report
        # Its age tells the operator the learner went quiet (it reports every few seconds while it runs).
        st["learner"] = None if report is None else report | {"age_s": round(time.time() - report["received_at"], 1)}
        st["control_loop_alive"] = self.loop.running
        return st

    def _restore_policies(self) -> None:
        from policies.intake import CheckpointRejected

        for direction, raw in self.policies.stored_checkpoints().items():
            try:
                self.accept_checkpoint(direction, raw, persist=False)
                log.info("restored the %s policy from %s", direction, self.cfg.server.checkpoint_dir)
            except CheckpointRejected as exc:
                log.warning("stored %s checkpoint not restored: %s", direction, exc.message)

    def accept_checkpoint(self, direction: str, raw: bytes, persist: bool = True):
        """Validate (on the calling thread, never the control thread) and stage for the next tick."""
        from robot_server.policy_intake import accept

        return accept(self, direction, raw, persist)

    def _print_status(self) -> None:
        tty = sys.stderr.isatty()
        every = 1.0 if tty else 10.0
        while not self._stopped.wait(every):
            try:
                line = status_line(self.status())
            except Exception as exc:
                line = f"status unavailable: {exc}"
            if tty:
                sys.stderr.write("\r" + line[:160].ljust(160))
            else:
                sys.stderr.write(line + "\n")
            sys.stderr.flush()


def _wind_down(sup: Supervisor) -> None:
    if sup.mode == Mode.PRACTICE:
        sup.stop_session()
    elif sup.mode == Mode.EVAL:
        sup.stop_eval()
    elif sup.mode == Mode.DEMO:
        sup.discard_demo() if sup.demo and sup.demo.source == DemoSource.EXPERT else sup.finish_demo(success=False)


def status_line(st: dict[str, Any]) -> str:
    t = st["tick"]
    sess = st.get("session") or {}
    pol = st["policies"]
    fv = (pol.get("forward") or {}).get("version", "-")
    bv = (pol.get("backward") or {}).get("version", "-")
    where = st["mode"]
    if sess:
        where = f"{sess['direction'][:3]} ph{sess['phase']} {sess['phase_step']}/{sess['phase_steps']} step {sess['total_steps']}"
    arm = st.get("arm") or {}
    return (
        f"[{where} | {st['stage']}] tick {t['ticks']} err p99 {t['period_error_ms_p99']:.2f} ms "
        f"work p99 {t['work_ms_p99']:.1f} ms late {t['late']} stale {t['stale_frames']} | "
        f"arm {arm.get('mode', '?')} | pol f{fv} b{bv} | stored {st['store']['steps_written']} "
        f"| interventions {st['counters']['interventions']}"
    )
