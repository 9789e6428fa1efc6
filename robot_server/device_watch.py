"""Device faults as the daemon sees them, once per tick: a camera whose frames went stale, a reflex
of the arm, a gripper that stopped answering, a teleop device that cannot be read, an operator
taking over. Each is counted when it starts, marked recovered when the device works again, and
escalated when it became a help request; the FaultLog pairs these with injected faults.

Only the daemon's own signals are read (the observer's staleness, the arm's reflex counter and
mode, the gripper's last answer, `Teleop.fault()`, the arbiter's takeover flag, open help
requests), so a real fault and an injected one go through the same path.
"""

from __future__ import annotations

import numpy as np

from arm.base import ArmMode, ArmState
from robot_server.faults import FaultKind, FaultLog
from robot_server.help import HelpSource
from robot_server.observation import Stale
from robot_server.tick import ModeContext
from spec.clock import now

# Which help request means that a fault of a kind was escalated to the operator.
ESCALATIONS = {
    FaultKind.CAMERA_STOP: HelpSource.CAMERAS,
    FaultKind.REFLEX: HelpSource.ARM,
    FaultKind.GRIPPER_STUCK: HelpSource.GRIPPER,
    FaultKind.SPACEMOUSE_UNPLUG: HelpSource.TELEOP,
}


class DeviceWatch:
    def __init__(self, ctx: ModeContext, faults: FaultLog) -> None:
        self.ctx = ctx
        self.faults = faults
        self.gripper_timeout_s = ctx.cfg.arm.gripper_timeout_s
        self.gripper_help_s = ctx.cfg.arm.gripper_help_s
        self._stale = False
        self._reflexes_seen = ctx.arm.stats.reflexes
        self._reflexes_open = 0  # reflexes detected and not yet recovered from
        self._gripper_lost = False
        self._teleop_faults: dict[str, str | None] = {}
        self._takeover_from: np.ndarray | None = None
        self._escalated: set[FaultKind] = set()

    def tick(self, state: ArmState, stale: Stale | None) -> str | None:
        """Look at this tick's signals; returns why a teleop device was lost this tick, if one was."""
        self._frames(stale)
        self._reflexes(state)
        self._gripper()
        lost = self._teleops()
        self._takeover(state)
        self._escalations()
        return lost

    def _frames(self, stale: Stale | None) -> None:
        if stale is not None and not self._stale:
            self.faults.detected(FaultKind.CAMERA_STOP, f"frames stale: {stale.reason}")
        elif stale is None and self._stale:
            self.faults.recovered(FaultKind.CAMERA_STOP)
        self._stale = stale is not None

    def _reflexes(self, state: ArmState) -> None:
        stats = self.ctx.arm.stats
        for _ in range(stats.reflexes - self._reflexes_seen):
            self.faults.detected(FaultKind.REFLEX, stats.last_error or "")
            self._reflexes_open += 1
        self._reflexes_seen = stats.reflexes
        if self._reflexes_open and state.mode == ArmMode.READY:
            for _ in range(self._reflexes_open):
                self.faults.recovered(FaultKind.REFLEX)
            self._reflexes_open = 0

    def _gripper(self) -> None:
        answered = self.ctx.arm.stats.gripper_answered_at
        if answered is None:
            return  # this arm does not report its gripper's answers
        silent_s = now() - answered
        if silent_s > self.gripper_timeout_s:
            if not self._gripper_lost:
                self._gripper_lost = True
                self.faults.detected(FaultKind.GRIPPER_STUCK, f"no answer for {silent_s:.1f} s")
            if silent_s > self.gripper_help_s:
                self.ctx.help.ask(HelpSource.GRIPPER, f"the gripper has not answered for {silent_s:.0f} s: "
                                  "check its cable and controller")
        elif self._gripper_lost:
            self._gripper_lost = False
            self.faults.recovered(FaultKind.GRIPPER_STUCK)
            self.ctx.help.resolve(HelpSource.GRIPPER)

    def _teleops(self) -> str | None:
        lost = None
        for t in self.ctx.teleop.teleops:
            try:
                why = t.fault()
            except Exception as exc:  # a broken driver is a fault of its device, never of the loop
                why = f"{t.name}: {type(exc).__name__}: {exc}"
            if t.name not in self._teleop_faults:
                self._teleop_faults[t.name] = why  # how it started is no change
                continue
            before = self._teleop_faults[t.name]
            self._teleop_faults[t.name] = why
            if why is not None and before is None:
                self.faults.detected(FaultKind.SPACEMOUSE_UNPLUG, why)
                lost = why
            elif why is None and before is not None:
                self.faults.recovered(FaultKind.SPACEMOUSE_UNPLUG, f"{t.name} is back")
        if not any(self._teleop_faults.values()):
            self.ctx.help.resolve(HelpSource.TELEOP)
        return lost

    def _takeover(self, state: ArmState) -> None:
        taking_over = self.ctx.teleop.taking_over
        if taking_over and self._takeover_from is None:
            self._takeover_from = state.position.copy()
            self.faults.detected(FaultKind.TAKEOVER)
        elif not taking_over and self._takeover_from is not None:
            offset = (state.position - self._takeover_from) * 1e3
            self.faults.recovered(FaultKind.TAKEOVER, "the operator moved the arm by "
                                  f"[{', '.join(f'{v:.0f}' for v in offset)}] mm; the policy went on from there")
            self._takeover_from = None

    def _escalations(self) -> None:
        for kind, source in ESCALATIONS.items():
            if not self.ctx.help.is_open(source):
                self._escalated.discard(kind)
            elif kind not in self._escalated:
                self._escalated.add(kind)
                self.faults.escalated(kind)
