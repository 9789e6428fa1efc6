"""Calibration: the workspace box and home pose, camera crop rectangles, and hand-eye calibration
(`robot-server calibrate ...`, the /calibration API routes and /static/calibration.html)."""
