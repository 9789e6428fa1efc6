"""Request bodies of the operator API, and the response models of its newer routes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveInt

from robot_server.modes import DemoSource
from spec.direction import Direction


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReasonBody(Body):
    reason: str = Field("", max_length=500)


class InterventionBody(Body):
    reason: str = Field(..., min_length=1, max_length=500, description="what the operator had to do and why")


class DemoStart(Body):
    direction: Direction
    source: DemoSource = Field(DemoSource.TELEOP, description="expert: the scripted sim expert")
    max_steps: int = Field(600, ge=1, le=100_000, description="the demo ends by itself after this many steps")


class SuccessBody(Body):
    direction: Direction | None = Field(None, description="default: the direction being practised")


class VerdictBody(Body):
    success: bool = Field(..., description="was the task done within the horizon?")


class DemoFinish(Body):
    success: bool


class KeyboardInput(Body):
    """Held keys from the page, as axes in [-1, 1]; they expire after `hold_s` unless repeated."""

    x: float = Field(0.0, ge=-1, le=1)
    y: float = Field(0.0, ge=-1, le=1)
    z: float = Field(0.0, ge=-1, le=1)
    yaw: float = Field(0.0, ge=-1, le=1)
    gripper: Literal["open", "close"] | None = None
    hold_s: float = Field(0.3, gt=0, le=2.0)


class LearnerReport(Body):
    """What the learner tells the operator: training progress and classifier diagnostics."""

    step: int = Field(..., ge=0)
    metrics: dict[str, float] = Field(default_factory=dict, max_length=200)
    behind_steps: dict[Direction, NonNegativeInt] = Field(
        default_factory=dict, description="agent steps owed: env steps collected but not trained on yet"
    )
    dropped: dict[Direction, NonNegativeInt] = Field(
        default_factory=dict, description="agent steps given up for good by the learner's backlog cap"
    )
    buffered: dict[Direction, NonNegativeInt] = Field(default_factory=dict, description="steps in the replay rings")
    capacity: PositiveInt | None = Field(None, description="steps each replay ring holds at most")


class LabelBody(Body):
    verdict: Literal["goal", "not_goal", "success", "failure"] = Field(
        ..., description="goal / not_goal: frames [start, stop); success / failure: the whole episode"
    )
    start: int | None = Field(None, ge=0, description="first labelled frame (frame verdicts)")
    stop: int | None = Field(None, ge=1, description="one past the last labelled frame (frame verdicts)")
    who: str = Field("operator", min_length=1, max_length=64, description="who labels (kept with the label)")


class FaultRecord(Body):
    """One injected device fault (`robot-server run --inject`) and what the daemon made of it."""

    kind: Literal["camera_stop", "reflex", "gripper_stuck", "spacemouse_unplug", "takeover"]
    injected_at: float = Field(..., description="unix time the fault was injected")
    detected_at: float | None = Field(..., description="unix time the daemon noticed it (null: not yet)")
    recovered_at: float | None = Field(..., description="unix time the device worked again (null: not yet)")
    escalated: bool = Field(..., description="it became a help request to the operator")
    detail: str
