"""How long a demonstration's goal is held, shared by the daemon that records demos and the learner
that takes their last frames as classifier positives (MEDALPP.md "Classifier training")."""

from __future__ import annotations

# A demonstration ends only after its goal has been held this many consecutive steps, so the last
# GOAL_HOLD_STEPS frames of a successful demo all show the goal: they are the goal classifier's
# positives (forward demos) and, on the robot, part of the backward classifier's (backward demos).
GOAL_HOLD_STEPS = 21
