"""The operator API's documents: request bodies, replies, and the error body every refusal uses.

Replies forbid keys they do not declare, so the OpenAPI document is the whole answer: a key the
daemon adds without declaring it here fails loudly in the tests (a 500 from response
validation), instead of drifting from the documented contract. Free-form parts (event payloads,
episode attributes, values read back from the YAML file) say so with `extra="allow"` or JsonValue.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, NonNegativeInt, PositiveInt

from robot_server.help import HelpSource
from robot_server.json_body import JsonBody
from robot_server.modes import DemoSource, Mode, Stage
from robot_server.session import InterventionKind, SessionParams
from spec.camera_config import CameraConfig, CropRect, OutputSize
from spec.direction import Direction
from spec.step import ArmMode


class Reply(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- errors
class Problem(Reply):
    """Why a request was refused: the body of every 4xx and 5xx (a 422's adds `errors`)."""

    detail: str


class FieldProblem(Reply):
    loc: list[str | int] = Field(..., description="where: body, query, path or header, then the field")
    msg: str
    type: str


class InvalidRequest(Reply):
    """A 422: the request's values are not acceptable."""

    detail: str = Field(..., description="one `where: what` per bad field, joined by '; '")
    errors: list[FieldProblem] = Field(
        default_factory=list, description="each bad field; absent when the route itself refused the values"
    )


def problem(description: str) -> dict[str, Any]:
    """An entry of a route's `responses=`: a refusal with the Problem body."""
    return {"model": Problem, "description": description}


# Routes that run a command on the control thread (deps.command) can answer these two.
COMMAND_REFUSED: dict[int | str, dict[str, Any]] = {
    409: problem("the daemon's current mode or stage does not allow it"),
    503: problem("the control loop is not running or did not answer"),
}


# ---------------------------------------------------------------- request bodies
class ReasonBody(JsonBody):
    reason: str = Field("", max_length=500)


class InterventionBody(JsonBody):
    reason: str = Field(..., min_length=1, max_length=500, description="what the operator had to do and why")


class DemoStart(JsonBody):
    direction: Direction
    source: DemoSource = Field(DemoSource.TELEOP, strict=False, description="expert: the scripted sim expert")
    max_steps: int = Field(600, ge=1, le=100_000, description="the demo ends by itself after this many steps")


class SuccessBody(JsonBody):
    direction: Direction | None = Field(None, description="default: the direction being practised")


class VerdictBody(JsonBody):
    success: bool = Field(..., description="was the task done within the horizon?")


class DemoFinish(JsonBody):
    success: bool


class KeyboardInput(JsonBody):
    """Held keys from the page, as axes in [-1, 1]; they expire after `hold_s` unless repeated."""

    x: float = Field(0.0, ge=-1, le=1)
    y: float = Field(0.0, ge=-1, le=1)
    z: float = Field(0.0, ge=-1, le=1)
    yaw: float = Field(0.0, ge=-1, le=1)
    gripper: Literal["open", "close"] | None = None
    hold_s: float = Field(0.3, gt=0, le=2.0)


class LearnerReport(JsonBody):
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



# ---------------------------------------------------------------- small acknowledgements
class Ok(Reply):
    ok: bool


class StageReply(Reply):
    stage: Stage = Field(..., description="the stage the command leads to")


class EstopReply(Reply):
    estop: bool = Field(..., description="true: motion is halted until released")


class HomingReply(Reply):
    homing: bool


class ResumedReply(Reply):
    resumed: bool


class ResetRequested(Reply):
    reset_requested: str = Field(..., description="the reason, done at the next switch to forward")


class SuccessConfirmed(Reply):
    direction: Direction
    step: int = Field(..., description="session step at which it was confirmed")


# ---------------------------------------------------------------- status parts
class Health(Reply):
    ok: bool
    control_loop_alive: bool
    uptime_s: float


class TickStats(Reply):
    """The control loop's counters, and percentiles over its recent window (ms)."""

    ticks: int
    late: int
    skipped: int
    overruns: int
    stale_frames: int
    invalid_actions: int
    period_error_ms_p50: float
    period_error_ms_p99: float
    period_error_ms_max: float
    work_ms_p50: float
    work_ms_p99: float
    work_ms_mean: float
    work_pct_of_budget_p99: float
    work_pct_of_budget_mean: float
    frame_age_ms_p50: float
    frame_age_ms_p99: float


class ArmStatus(Reply):
    mode: ArmMode
    position: list[float] = Field(..., description="end effector x, y, z (m)")
    yaw: float
    gripper_width: float
    gripper_closed: bool
    external_force: list[float]
    targets: int
    reflexes: int
    recoveries: int
    failed_recoveries: int
    homings: int
    last_error: str | None
    gripper_age_s: float | None = Field(..., description="seconds since the gripper last answered; null before it has")


class CameraStats(Reply):
    frames: int
    resets: int
    age_s: float | None = Field(..., description="age of the newest frame; null before the first")
    capture_ms: float
    last_error: str | None


class ActivePolicyInfo(Reply):
    version: int
    training_step: int | None
    received_at: float
    swap_latency_ms: float | None


class PolicySummary(Reply):
    forward: ActivePolicyInfo | None
    backward: ActivePolicyInfo | None
    swaps: int
    rejected: int


class StaleFrames(Reply):
    """A session's, demo's or eval's stale-frame spells (robot_server.stale)."""

    stale_ticks: int = Field(..., description="ticks held because a frame was late")
    stale_spells: int = Field(..., description="runs of consecutive stale ticks")
    stale_camera_resets: int = Field(..., description="camera resets after frames stayed stale for session.stale_pause_s")
    stale_s: float = Field(..., description="length of the current stale spell, s")


class SessionSummary(StaleFrames):
    id: str
    params: SessionParams
    direction: Direction
    phase: int
    phase_step: int
    phase_steps: int
    total_steps: int
    steps_since_home: int
    home_every: int
    homings: int
    interventions: int
    interventions_by_kind: dict[str, int]
    reset_requested: str | None
    started_at: float
    paused_for_frames: bool = Field(..., description="practice holds while the cameras are reset")
    paused_for_store: bool = Field(..., description="practice holds while the store's disk is full")
    end_reason: str | None = Field(None, description="why it ended; absent while it runs")


class DemoStatus(StaleFrames):
    direction: Direction
    source: DemoSource
    steps: int
    stage: Stage
    hold_steps_left: int | None = Field(None, description="only while the goal is being held")


class EvalEpisodeResult(Reply):
    episode: int
    policy_version: int
    success: bool
    steps: int
    judged_by: str = Field(..., description="task (sim) or operator (robot)")
    goal_score: float | None


class EvalSummary(StaleFrames):
    id: str
    episodes: int
    horizon: int
    episode: int = Field(..., description="the current episode, from 0")
    steps: int
    stage: Stage
    policy_version: int | None
    successes: int
    results: list[EvalEpisodeResult]
    end_reason: str | None = Field(None, description="why it ended; absent while it runs")


class Counters(Reply):
    takeovers: int
    manual_resets: int
    operator_interventions: int
    demos_recorded: int
    demos_discarded: int
    estops: int
    policy_errors: int
    stale_camera_resets: int
    interventions: int = Field(..., description="takeovers + manual resets + operator interventions")


class HelpRequest(Reply):
    source: HelpSource
    reason: str
    since: float


class RecentEvent(BaseModel):
    """One of the daemon's recent events; the keys besides `t` and `event` depend on the event."""

    model_config = ConfigDict(extra="allow")
    t: float
    event: str


class StoredEvent(BaseModel):
    """An entry of the store's event log; the keys besides these depend on its type."""

    model_config = ConfigDict(extra="allow")
    seq: int
    time: float
    type: str


class LastEpisode(Reply):
    id: str
    kind: str
    direction: str
    length: int
    success: bool | None


class StoreFull(Reply):
    message: str
    cause: str = Field(..., description="what failed, or how little space is left")
    path: str
    free_mb: float | None
    resume_free_mb: float = Field(..., description="practice resumes by itself once this much is free")
    since: float


class StoreStatus(Reply):
    path: str
    steps_written: int
    events_logged: int
    episodes_closed: int
    backlog: int
    errors: int
    last_error: str | None
    last_episode: LastEpisode | None
    recording: bool
    full: StoreFull | None = Field(..., description="why the store takes no steps now; null while it does")
    free_mb: float | None = Field(..., description="free space on the store's disk at the last check")
    min_free_mb: float
    resume_free_mb: float
    space_checks: int
    space_pauses: int
    steps_lost: int = Field(..., description="steps taken but never stored: in flight when the disk filled")
    events_pending: int = Field(..., description="events waiting for room on the disk")
    events_dropped: int
    episodes_untidy: list[str] = Field(..., description="episodes ended by a full disk and not yet closed on it")


class KeyboardStatus(Reply):
    held: dict[str, float] = Field(..., description="x, y, z, yaw in [-1, 1]")
    expires_in_s: float
    gripper_closed: bool
    active: bool


class TeleopStatus(Reply):
    spacemouse: dict[str, JsonValue] | None = Field(..., description="the SpaceMouse reader; null without one")
    keyboard: KeyboardStatus


class LearnerSummary(Reply):
    received_at: float
    step: int
    # A diverging loss is NaN: shown as null (JSON has no NaN), not dropped.
    metrics: dict[str, float | None] = Field(..., description="null: not a finite number")
    classifier: dict[str, float | None] = Field(..., description="the metrics whose name starts with clf")
    behind_steps: dict[Direction, int] = Field(..., description="agent steps owed: collected, not trained on yet")
    dropped: dict[Direction, int] = Field(..., description="agent steps given up for good by the backlog cap")
    buffered: dict[Direction, int] = Field(..., description="steps in the replay rings")
    capacity: int | None = Field(..., description="steps each replay ring holds at most")
    age_s: float = Field(..., description="seconds since the learner last reported")


class FaultCounts(Reply):
    injected: int
    detected: int = Field(..., description="injected or real")
    recovered: int
    escalated: int = Field(..., description="became a help request")


class Status(Reply):
    """The control loop's newest snapshot, plus store, teleop and learner state."""

    time: float
    tick: TickStats
    arm: ArmStatus | None = Field(..., description="null before the arm's first state")
    action: list[float] | None = Field(..., description="the action executed by the last tick")
    action_source: str
    cameras: dict[str, CameraStats]
    policies: PolicySummary
    mode: Mode
    stage: Stage
    session: SessionSummary | None
    demo: DemoStatus | None
    eval: EvalSummary | None
    takeover: bool
    counters: Counters
    help_requests: list[HelpRequest]
    recent_events: list[RecentEvent]
    uptime_s: float
    store: StoreStatus
    teleop: TeleopStatus
    learner: LearnerSummary | None
    control_loop_alive: bool
    faults: dict[str, FaultCounts] = Field(..., description="device faults by kind (GET /faults lists each injected one)")


# ---------------------------------------------------------------- sessions, demos, evals
class CurrentSession(Reply):
    session: SessionSummary
    stage: Stage
    help_requests: list[HelpRequest]


class DemoStarted(Reply):
    recording: bool
    direction: Direction
    source: DemoSource
    max_steps: int


class DemoResult(Reply):
    direction: Direction
    steps: int
    success: bool


class CurrentDemo(Reply):
    demo: DemoStatus | None = Field(..., description="the demo being recorded, if any")
    last: DemoResult | None = Field(..., description="the last demo saved since the daemon started")


class DemoFinished(Reply):
    direction: Direction
    steps: int
    success: bool
    closed: bool = Field(..., description="false: the goal is being held, the demo closes after that")
    hold_steps_left: int | None = None


class DemoDiscarded(Reply):
    direction: Direction
    steps: int
    discarded: bool


class VersionSuccess(Reply):
    version: int
    episodes: int
    successes: int
    last_at: float | None
    success_rate: float


class EvalResults(Reply):
    direction: Literal["forward"]
    versions: list[VersionSuccess] = Field(..., description="oldest version first")


# ---------------------------------------------------------------- interventions and events
class InterventionRecord(Reply):
    kind: InterventionKind
    reason: str
    step: int | None = Field(..., description="session step; null outside a session")
    direction: Direction | None
    session: str | None
    wall_time: float


class Interventions(Reply):
    counters: Counters
    session: list[InterventionRecord] = Field(..., description="the running session's interventions")
    stored_total: int
    stored: list[StoredEvent] = Field(..., description="the store's intervention events, oldest first")


class Events(Reply):
    total: int
    events: list[StoredEvent]


class HelpRequests(Reply):
    help_requests: list[HelpRequest]


# ---------------------------------------------------------------- policies
class PolicyAccepted(Reply):
    direction: Direction
    version: int
    active: bool = Field(..., description="true once the control loop swapped it in (within 1 s)")
    training_step: int | None
    mode: str = Field(..., description="the observation mode the policy was trained on")
    swap_latency_ms: float | None


# ---------------------------------------------------------------- episodes
class EpisodeInfo(Reply):
    id: str
    kind: str = Field(..., description="demo, practice or eval")
    direction: str
    length: int
    closed: bool
    success: bool | None
    started_at: float
    ended_at: float | None
    duration_s: float | None
    session: str | None
    end_reason: str | None


class EpisodeList(Reply):
    total: int
    by_kind: dict[str, int] = Field(..., description="count per kind/direction")
    episodes: list[EpisodeInfo] = Field(..., description="newest first")


class EpisodeDetail(EpisodeInfo):
    steps: int | None = Field(None, description="the fields from here to attrs: only for an episode with steps")
    step_duration_s: float | None = None
    intervention_steps: int | None = None
    policy_versions: list[int] | None = None
    attrs: dict[str, JsonValue] = Field(..., description="the episode's attributes in the store")


# ---------------------------------------------------------------- cameras
class CameraInfo(CameraConfig):
    model_config = ConfigDict(extra="forbid")
    stats: CameraStats


class CameraList(Reply):
    cameras: list[CameraInfo]


# ---------------------------------------------------------------- calibration
class Workspace(Reply):
    low: list[float]
    high: list[float]


class Box(Workspace):
    size: list[float]


class MarkedPoint(Reply):
    index: int
    position: list[float]
    at: float


class CalibrationCamera(Reply):
    name: str
    width: int
    height: int
    output: OutputSize
    crop: CropRect = Field(..., description="in effect")
    crop_saved: JsonValue = Field(..., description="as written in the config file (from the next start)")
    extrinsics: dict[str, JsonValue] | None
    handeye_samples: int


class CalibrationOverview(Reply):
    config_path: str | None
    workspace: Workspace
    workspace_saved: JsonValue = Field(..., description="as written in the config file")
    home_joints: list[float]
    home_joints_saved: JsonValue = Field(..., description="as written in the config file")
    cameras: list[CalibrationCamera]
    points: list[MarkedPoint]
    note: str


class ArmPose(Reply):
    mode: ArmMode
    position: list[float]
    quaternion: list[float] = Field(..., description="w x y z")
    yaw: float
    joints: list[float]
    timestamp: float


class PointMarked(Reply):
    point: MarkedPoint
    count: int


class WorkspaceProposal(Reply):
    points: list[MarkedPoint]
    margin_m: float
    box: Box | None
    problem: str | None = Field(..., description="why no box is proposed")
    current: Workspace


class Cleared(Reply):
    cleared: int


class Saved(Reply):
    saved: bool
    config_path: str
    backup: str
    note: str
    values: dict[str, JsonValue] = Field(..., description="the settings written, by dotted name")


class WorkspaceSaved(Saved):
    box: Box


class HomeSaved(Saved):
    tcp_position: list[float]
    warning: str | None = None


class CropSaved(Saved):
    crop: CropRect
    warning: str | None


class HandeyeSampleSaved(Reply):
    sample: int
    image: str
    directory: str
    count: int
    position: list[float]
    quaternion: list[float]
    intrinsics: dict[str, JsonValue] | None


class HandeyeSample(Reply):
    index: int
    position: list[float]
    quaternion: list[float]


class HandeyeSamples(Reply):
    directory: str
    count: int
    samples: list[HandeyeSample]


class LabelBody(JsonBody):
    verdict: Literal["goal", "not_goal", "success", "failure"] = Field(
        ..., description="goal / not_goal: frames [start, stop); success / failure: the whole episode"
    )
    start: int | None = Field(None, ge=0, description="first labelled frame (frame verdicts)")
    stop: int | None = Field(None, ge=1, description="one past the last labelled frame (frame verdicts)")
    who: str = Field("operator", min_length=1, max_length=64, description="who labels (kept with the label)")


# ---------------------------------------------------------------- labels (routes/labels.py)
class LabelRecord(Reply):
    episode: str
    verdict: Literal["goal", "not_goal", "success", "failure"]
    start: int | None = Field(..., description="first labelled frame; null for a whole-episode verdict")
    stop: int | None = Field(..., description="one past the last labelled frame; null for a verdict")
    who: str
    time: float = Field(..., description="when it was labelled (unix s)")
    seq: int | None = Field(..., description="its entry in the store's event log")


class EpisodeLabels(Reply):
    episode: str
    verdict: Literal["success", "failure"] | None = Field(..., description="the newest whole-episode verdict")
    goal_frames: list[int]
    not_goal_frames: list[int]
    labels: list[LabelRecord] = Field(..., description="every label of the episode, oldest first")


class LabelAdded(EpisodeLabels):
    label: LabelRecord = Field(..., description="the label just stored")


# ---------------------------------------------------------------- review (routes/review.py)
class StepRow(Reply):
    index: int
    timestamp: float = Field(..., description="when the step's observation was taken (the daemon's clock, s)")
    direction: str
    phase: int | None = Field(None, description="the practice phase the episode (segment) belongs to")
    action: list[float]
    policy_version: int = Field(..., description="-1: no learned policy acted")
    intervention: bool
    scores: dict[str, float] = Field(..., description="σ(C(s)) per loaded classifier, by direction")


class ScoringClassifier(Reply):
    version: int
    training_step: int
    cameras: list[str]


class EpisodeSteps(Reply):
    episode: str
    kind: str
    direction: str
    phase: int | None
    closed: bool
    success: bool | None
    length: int = Field(..., description="committed steps (an open episode grows)")
    rate_hz: float
    cameras: list[str] = Field(..., description="views available at /episodes/{id}/frames/{step}.jpg?camera=")
    classifiers: dict[str, ScoringClassifier] = Field(..., description="the classifiers that scored the steps")
    steps: list[StepRow]


# ---------------------------------------------------------------- classifiers (routes/classifiers.py)
class LoadedClassifier(Reply):
    version: int = Field(..., description="the learner's classifier step count (above any earlier learner's)")
    training_step: int
    mode: str = Field(..., description="pixels | state: what the classifier reads")
    cameras: list[str] = Field(..., description="the views it looks at")
    size_bytes: int
    sha256: str
    received_at: float | None = Field(None, description="unix time of the upload")


class Classifiers(Reply):
    forward: LoadedClassifier | None = Field(None, description="the goal classifier C_f")
    backward: LoadedClassifier | None = Field(None, description="the state-matching classifier C_b")
    rejected: int = Field(..., description="uploads refused since the daemon started")


class AcceptedClassifier(LoadedClassifier):
    direction: Direction


class FaultRecord(Reply):
    """One injected device fault (`robot-server run --inject`) and what the daemon made of it."""

    kind: Literal["camera_stop", "reflex", "gripper_stuck", "spacemouse_unplug", "takeover"]
    injected_at: float = Field(..., description="unix time the fault was injected")
    detected_at: float | None = Field(..., description="unix time the daemon noticed it (null: not yet)")
    recovered_at: float | None = Field(..., description="unix time the device worked again (null: not yet)")
    escalated: bool = Field(..., description="it became a help request to the operator")
    detail: str
