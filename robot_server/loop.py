"""The control thread: the 10 Hz tick. It is the only thread that touches the arm.

One tick: run queued operator commands and swap in new policies, read the arm and the newest
camera frames (stale ones rejected), let the supervisor pick an action, clip it to the safety
box, send it, and hand the transition to the writer thread. Timing of every tick is recorded.
"""

from __future__ import annotations

import concurrent.futures
import gc
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np

from arm.base import Arm, ArmMode, ArmState
from camera.base import Camera
from robot_server.observation import Observer
from robot_server.policy_slots import PolicySlots
from robot_server.supervisor import Supervisor
from robot_server.timing import Ticker, TickStats
from spec.clock import now
from spec.step import ActionSpace, InvalidAction

log = logging.getLogger(__name__)
T = TypeVar("T")


class ControlLoop:
    def __init__(
        self,
        arm: Arm,
        cameras: Mapping[str, Camera],
        observer: Observer,
        supervisor: Supervisor,
        policies: PolicySlots,
        action_space: ActionSpace,
        rate_hz: float,
        realtime_priority: int = 0,
        tick_stats_s: float = 0.0,
    ) -> None:
        self.arm = arm
        self.cameras = cameras
        self.observer = observer
        self.supervisor = supervisor
        self.policies = policies
        self.space = action_space
        self.period = 1.0 / rate_hz
        self.realtime_priority = realtime_priority
        # tick_stats_s > 0: the stats close a window of ticks that often (robot_server.tick_stats stores them).
        self.stats = TickStats(period_ms=self.period * 1e3, window_s=tick_stats_s)
        self._commands: queue.SimpleQueue[tuple[Callable[[Supervisor], Any], concurrent.futures.Future]] = (
            queue.SimpleQueue()
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_state: ArmState | None = None
        self.last_action: np.ndarray | None = None
        self.last_source = "hold"
        self.snapshot: dict[str, Any] = {}
        self.on_tick: list[Callable[[ControlLoop], None]] = []
        self.crashed: BaseException | None = None

    # --- other threads ---
    def submit(self, fn: Callable[[Supervisor], T], timeout: float = 5.0) -> T:
        """Run `fn(supervisor)` on the control thread at the next tick and return its result."""
        if not self.running:
            raise RuntimeError("the control loop is not running")
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._commands.put((fn, fut))
        return fut.result(timeout=timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="control", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the loop ends; True if it did."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    # --- the control thread ---
    def _run(self) -> None:
        self._set_priority()
        gc.collect()
        gc.freeze()  # start-up objects never need scanning again: shorter GC pauses in the tick
        ticker = Ticker(self.period)
        try:
            while not self._stop.is_set():
                lateness, skipped = ticker.wait()
                t0 = time.perf_counter()
                self.tick()
                self.stats.record(lateness, skipped, time.perf_counter() - t0)
                # Built here, on the control thread, so readers never see state mid-update.
                self.snapshot = self.status()
                for cb in self.on_tick:
                    cb(self)
        except BaseException as exc:
            # The arm must not keep tracking a target nobody updates.
            self.crashed = exc
            log.exception("control loop crashed; stopping the arm")
            try:
                self.arm.stop()
            except Exception:
                log.exception("arm.stop() failed")
        finally:
            self._fail_pending("the control loop stopped")

    def tick(self) -> None:
        self._run_commands()
        for p in self.policies.swap_staged():
            log.info("policy %s v%d active", p.direction, p.version)
        state = self.arm.read()
        obs, stale = self.observer.observe(state)
        if obs is None:
            self.stats.stale_frames += 1
        else:
            self.stats.frame_age.add(obs.max_age_s * 1e3)
        sup = self.supervisor
        decision = sup.tick(state, obs, stale)
        executed: np.ndarray | None = None
        if decision.action is not None and state.mode == ArmMode.READY:
            try:
                executed = self.space.clip_action(decision.action)
            except InvalidAction as exc:
                self.stats.invalid_actions += 1
                log.warning("refused action from %s: %s", decision.source, exc)
            if executed is not None:
                self.arm.send_target(self.space.target(executed, state))
        if decision.record and obs is not None:
            if executed is None:
                executed = self.space.clip_action(sup.hold_action(state))
            sup.step_record(obs, decision, executed)
        sup.after_record()
        self.last_state, self.last_action, self.last_source = state, executed, decision.source

    def _run_commands(self) -> None:
        while True:
            try:
                fn, fut = self._commands.get_nowait()
            except queue.Empty:
                return
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(self.supervisor))
            except BaseException as exc:
                fut.set_exception(exc)

    def _fail_pending(self, why: str) -> None:
        while True:
            try:
                _fn, fut = self._commands.get_nowait()
            except queue.Empty:
                return
            if fut.set_running_or_notify_cancel():
                fut.set_exception(RuntimeError(why))

    def _set_priority(self) -> None:
        if self.realtime_priority <= 0:
            return
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self.realtime_priority))
            log.info("control thread runs SCHED_FIFO priority %d", self.realtime_priority)
        except (PermissionError, OSError) as exc:
            log.warning("could not set SCHED_FIFO priority %d (%s); using normal scheduling",
                        self.realtime_priority, exc)

    def status(self) -> dict[str, Any]:
        s = self.last_state
        return {
            "time": now(),
            "tick": self.stats.summary(refresh_every=10),
            "arm": None
            if s is None
            else {
                "mode": s.mode.value,
                "position": [round(float(v), 5) for v in s.position],
                "yaw": round(float(s.yaw), 4),
                "gripper_width": round(float(s.gripper_width), 4),
                "gripper_closed": s.gripper_closed,
                "external_force": [round(float(v), 3) for v in s.external_force],
                **self.arm.stats.as_dict(),
            },
            "action": None if self.last_action is None else [round(float(v), 4) for v in self.last_action],
            "action_source": self.last_source,
            "cameras": {n: c.stats.as_dict() for n, c in self.cameras.items()},
            "policies": self.policies.summary(),
            **self.supervisor.status(),
        }
