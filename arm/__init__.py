"""The arm interface (`base`) and the franky (libfranka) driver: `franky_driver` (the `Arm`),
`tracking` (following the target), `gripper` (the gripper thread), `recovery` (the reflex
recovery state machine). The MuJoCo arm lives in `sim`."""
