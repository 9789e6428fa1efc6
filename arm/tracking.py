"""How the franky driver follows a stream of 10 Hz absolute poses (cfg.arm.tracking).

"impedance" keeps one `CartesianImpedanceTrackingMotion` running and moves its reference every
tick; "cartesian" re-targets an asynchronous `CartesianMotion` every tick (franky re-plans with
Ruckig within the dynamics factor). bench/franky_tracking.py compares them against franka-sim:
impedance lags 10 Hz random-walk targets by ~3.7 mm (mean) and never failed; the re-targeted
Cartesian motions lag ~6 mm when they work, but franky's re-planned trajectory sometimes wanders
off by centimetres (the sim follows the command within a millimetre) and its planner fails now
and then ("Motion planner failed", handled as a reflex). Hence impedance is the default.

Only the control thread calls a tracking; every call returns at once (the motions are
asynchronous), and a motion's error surfaces from `send()` or the driver's poll.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spec.config import Config

POSTURE_STIFFNESS = 10.0  # Nm/rad, pulls the impedance tracker's null space towards home_joints


class Tracking:
    """One way of handing franky the tick's target pose.

    `franky` is the franky module (passed in: the driver imports it lazily), `robot` its Robot.
    """

    name = ""

    def __init__(self, franky: Any, robot: Any, cfg: Config) -> None:
        self.franky = franky
        self.robot = robot
        self.cfg = cfg

    def send(self, pose: Any) -> None:
        """Make `pose` (a franky Affine) the target; raises what franky raises."""
        raise NotImplementedError

    def wind_down(self) -> None:
        """Start ending the running motion gently (returns at once)."""

    def reset(self) -> None:
        """Forget the running motion (it died in a reflex, or was stopped)."""


class ImpedanceTracking(Tracking):
    name = "impedance"

    def __init__(self, franky: Any, robot: Any, cfg: Config) -> None:
        super().__init__(franky, robot, cfg)
        self._motion: Any = None
        # Bounds the impedance force when the reference is far (K * clip: 2000 N/m * 3 cm = 60 N);
        # one tick's step is at most max_translation_m, so normal tracking is never clipped.
        self.error_clip = max(0.03, 1.5 * cfg.action.max_translation_m)

    def send(self, pose: Any) -> None:
        franky = self.franky
        reference = franky.CartesianReference(target=pose)
        if self._motion is not None and self.robot.is_in_control:
            self._motion.set_reference(reference)
            return
        imp = self.cfg.arm.impedance
        motion = franky.CartesianImpedanceTrackingMotion(
            translational_stiffness=imp.translational_stiffness,
            rotational_stiffness=imp.rotational_stiffness,
            translational_error_clip=np.full(3, self.error_clip),
            # The redundant (elbow) motion is otherwise free to drift over hours of tracking.
            posture_task=franky.PostureTask(np.asarray(self.cfg.arm.home_joints, dtype=np.float64), POSTURE_STIFFNESS),
        )
        motion.set_reference(reference)
        self.robot.move(motion, asynchronous=True)
        self._motion = motion

    def wind_down(self) -> None:
        if self._motion is not None and self.robot.is_in_control:
            # Torque motions never finish by themselves; this one ramps to damping and ends.
            self.robot.move(self.franky.TorqueStopMotion(), asynchronous=True)
        self._motion = None

    def reset(self) -> None:
        self._motion = None


class CartesianTracking(Tracking):
    name = "cartesian"

    def send(self, pose: Any) -> None:
        franky = self.franky
        self.robot.move(franky.CartesianMotion(pose, franky.ReferenceType.Absolute), asynchronous=True)

    # A re-targeted CartesianMotion ends by itself at its last target (< 2 cm away): nothing to do.


TRACKINGS: dict[str, type[Tracking]] = {"impedance": ImpedanceTracking, "cartesian": CartesianTracking}
