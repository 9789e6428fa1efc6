"""Decide whether new store metadata can extend an existing store.

Incompatible = old episodes could not be used next to new ones: the robot, the control rate, the
set of cameras or their stored sizes, the action dimension/layout, or the proprio/state sizes differ.
Anything else (crop, full sensor size, serial, action limits, extra) is a compatible change and is
recorded in the root attrs' meta_history so tools know which settings each episode was taken with.
"""

from __future__ import annotations

from typing import Any


def _cam_size(cam: dict[str, Any]) -> str:
    return f"{cam.get('height')}x{cam.get('width')}"


def compare_meta(old: dict[str, Any], new: dict[str, Any]) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """(incompatibilities, compatible changes as {field: {"old", "new"}}) between two root metas."""
    problems: list[str] = []
    changes: dict[str, dict[str, Any]] = {}

    for key in ("robot", "rate_hz", "proprio_dim", "state_dim"):
        if old.get(key) != new.get(key):
            problems.append(f"{key}: store has {old.get(key)!r}, new meta has {new.get(key)!r}")

    old_cams = {c["name"]: c for c in old.get("cameras", [])}
    new_cams = {c["name"]: c for c in new.get("cameras", [])}
    if set(old_cams) != set(new_cams):
        problems.append(f"cameras: store has {sorted(old_cams)}, new meta has {sorted(new_cams)}")
    for name in sorted(set(old_cams) & set(new_cams)):
        o, n = old_cams[name], new_cams[name]
        if (o.get("height"), o.get("width")) != (n.get("height"), n.get("width")):
            problems.append(f"camera {name!r} stored size: store has {_cam_size(o)}, new meta has {_cam_size(n)}")
        for k in sorted(set(o) | set(n)):
            if k not in ("name", "height", "width") and o.get(k) != n.get(k):
                changes[f"cameras.{name}.{k}"] = {"old": o.get(k), "new": n.get(k)}
    if [c["name"] for c in old.get("cameras", [])] != [c["name"] for c in new.get("cameras", [])] and not any(
        p.startswith("cameras:") for p in problems
    ):
        changes["cameras.order"] = {
            "old": [c["name"] for c in old["cameras"]],
            "new": [c["name"] for c in new["cameras"]],
        }

    oa, na = old.get("action_space", {}), new.get("action_space", {})
    for k in sorted(set(oa) | set(na)):
        if oa.get(k) == na.get(k):
            continue
        if k in ("dim", "layout"):
            problems.append(f"action_space.{k}: store has {oa.get(k)!r}, new meta has {na.get(k)!r}")
        else:
            changes[f"action_space.{k}"] = {"old": oa.get(k), "new": na.get(k)}

    if old.get("extra", {}) != new.get("extra", {}):
        changes["extra"] = {"old": old.get("extra", {}), "new": new.get("extra", {})}
    return problems, changes
