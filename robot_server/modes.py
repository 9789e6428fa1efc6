"""What the daemon is doing (mode) and where in it (stage): the words /status and the page show.

Both are StrEnums so the status document stays plain JSON strings.
"""

from __future__ import annotations

from enum import StrEnum


class Mode(StrEnum):
    IDLE = "idle"  # hold; teleop jogs the arm
    PRACTICE = "practice"  # the forward/backward schedule
    DEMO = "demo"  # a demonstration is being recorded (teleop, or the sim's scripted expert)
    EVAL = "eval"  # an eval session: the forward policy's mean action, episode by episode
    ESTOP = "estop"  # emergency stop: no motion until released


class Stage(StrEnum):
    IDLE = "idle"
    HOMING = "homing"  # the arm is on its way home before acting or recording
    ACTING = "acting"  # practice: a policy (or the operator) drives the arm, every step recorded
    PAUSED = "paused"
    AWAITING_RESET = "awaiting_reset"  # a person puts the scene back, then confirms
    RECORDING = "recording"  # demo: teleop or the expert drives the arm, every step recorded
    HOLDING_GOAL = "holding_goal"  # demo: recording on while the goal is held (spec.goal)
    AWAITING_VERDICT = "awaiting_verdict"  # eval on the robot: the operator says success or failure
    ESTOP = "estop"


class DemoSource(StrEnum):
    TELEOP = "teleop"  # SpaceMouse or keyboard
    EXPERT = "expert"  # the scripted expert (sim only)
