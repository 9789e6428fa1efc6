"""The device-fault ledger: every injected fault with the times the daemon itself noticed and got
over it, and counts of detected faults by kind (injected or real) for /status.

Injectors (robot_server.fault_injection) only call `injected()`. Detection, recovery and escalation
are stamped by robot_server.device_watch from the daemon's own signals (a stale observation, the
arm's reflex counter and mode, the gripper's last answer, a teleop device's fault, a takeover), so
a fault the daemon fails to notice stays `detected_at: null` in GET /faults.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any


class FaultKind(StrEnum):
    CAMERA_STOP = "camera_stop"  # a camera stops delivering frames
    REFLEX = "reflex"  # the arm's controller stops on a reflex mid-phase
    GRIPPER_STUCK = "gripper_stuck"  # the gripper stops answering
    SPACEMOUSE_UNPLUG = "spacemouse_unplug"  # the teleop device cannot be read
    TAKEOVER = "takeover"  # an operator takes the arm over from the policy


@dataclass
class FaultRecord:
    kind: str
    injected_at: float  # unix seconds
    detected_at: float | None = None
    recovered_at: float | None = None
    escalated: bool = False
    detail: str = ""


class FaultLog:
    """Thread-safe: injectors write from their own thread, the control thread stamps, the API reads."""

    KEEP = 1000  # records kept (a week of soak at one fault a minute would be ~10k: keep the newest)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[FaultRecord] = []
        self._detected = {k: 0 for k in FaultKind}
        self._recovered = {k: 0 for k in FaultKind}
        self._escalated = {k: 0 for k in FaultKind}
        self._injected = {k: 0 for k in FaultKind}

    def injected(self, kind: FaultKind, detail: str) -> None:
        with self._lock:
            self._injected[kind] += 1
            self._records.append(FaultRecord(kind.value, time.time(), detail=detail))
            del self._records[: -self.KEEP]

    def detected(self, kind: FaultKind, detail: str = "") -> None:
        """The daemon noticed a fault of `kind`: stamps the oldest injected one not yet noticed."""
        with self._lock:
            self._detected[kind] += 1
            rec = self._first(kind, lambda r: r.detected_at is None)
            if rec is not None:
                rec.detected_at = time.time()
                if detail:
                    rec.detail = f"{rec.detail}; {detail}" if rec.detail else detail

    def recovered(self, kind: FaultKind, detail: str = "") -> None:
        """A noticed fault of `kind` is over (the device works again)."""
        with self._lock:
            self._recovered[kind] += 1
            rec = self._first(kind, lambda r: r.detected_at is not None and r.recovered_at is None)
            if rec is not None:
                rec.recovered_at = time.time()
                if detail:
                    rec.detail = f"{rec.detail}; {detail}" if rec.detail else detail

    def escalated(self, kind: FaultKind) -> None:
        """A noticed fault of `kind` became a help request to the operator."""
        with self._lock:
            self._escalated[kind] += 1
            rec = self._first(kind, lambda r: r.detected_at is not None and r.recovered_at is None)
            if rec is not None:
                rec.escalated = True

    def _first(self, kind: FaultKind, pred: Any) -> FaultRecord | None:
        for rec in self._records:
            if rec.kind == kind.value and pred(rec):
                return rec
        return None

    def records(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(r) for r in self._records]

    def counts(self) -> dict[str, dict[str, int]]:
        """Per kind: injected, and detected / recovered / escalated whether injected or real."""
        with self._lock:
            return {
                k.value: {
                    "injected": self._injected[k],
                    "detected": self._detected[k],
                    "recovered": self._recovered[k],
                    "escalated": self._escalated[k],
                }
                for k in FaultKind
            }
