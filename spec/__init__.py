"""The shared base every process stands on: the config schema (`config`, `camera_config`), the step
description (`step`: arm state and target, action space and its clip, observation spec), the clock,
`Direction`, the demo goal hold (`goal`), and crash-safe file writes. It imports no other package of ours."""
