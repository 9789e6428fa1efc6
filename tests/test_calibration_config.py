"""Calibration writes into the robot's YAML config: comments and other keys kept, invalid values
refused naming the field, atomic with a .bak; workspace box proposal; crop checks and preview; the
`robot-server calibrate` commands that need no robot."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from calibration.config_file import ConfigEditError, backup_path, edit_config
from calibration.crop import aspect_note, check_crop, parse_rect, preview
from calibration.workspace import MIN_EXTENT_M, PointLog, home_edits, propose_box, workspace_edits
from robot_server.cli import app as cli_app
from spec.config import load_config

ROOT = Path(__file__).resolve().parents[1]
SIM_YAML = ROOT / "spec" / "configs" / "sim.yaml"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    p = tmp_path / "robot.yaml"
    text = SIM_YAML.read_text().replace("control:\n", "# a comment the operator wrote\ncontrol:  # inline too\n", 1)
    p.write_text(text)
    return p


def _others(tree: dict, drop: list[tuple[str, ...]]) -> dict:
    out = yaml.safe_load(yaml.safe_dump(tree))
    for keys in drop:
        node = out
        for k in keys[:-1]:
            node = node[k]
        node.pop(keys[-1], None)
    return out


# --- the config writer -------------------------------------------------------------------------
def test_edit_keeps_comments_other_keys_and_layout(config: Path) -> None:
    before_text = config.read_text()
    before = yaml.safe_load(before_text)
    cfg = edit_config(config, {"workspace.low": [0.3, -0.2, 0.03], "workspace.high": [0.6, 0.2, 0.25]})
    text = config.read_text()
    assert "# a comment the operator wrote" in text and "control:  # inline too" in text
    assert "# The simulated Panda world" in text.splitlines()[0]
    assert "low: [0.3, -0.2, 0.03]" in text  # flow style kept for the short list
    assert "  - name: wrist" in text  # the list indentation of the file, not ruamel's default
    after = yaml.safe_load(text)
    assert after["workspace"] == {"low": [0.3, -0.2, 0.03], "high": [0.6, 0.2, 0.25]}
    assert _others(after, [("workspace",)]) == _others(before, [("workspace",)])
    assert cfg.workspace.low == [0.3, -0.2, 0.03]
    assert load_config(config, env={}).workspace.high == [0.6, 0.2, 0.25]
    # Only the edited lines changed.
    changed = [a for a, b in zip(before_text.splitlines(), text.splitlines(), strict=True) if a != b]
    assert changed == ["  low: [0.35, -0.25, 0.02]", "  high: [0.70, 0.25, 0.30]"]
    assert backup_path(config).read_text() == before_text


def test_edit_inside_a_named_list_item(config: Path) -> None:
    edit_config(config, {"cameras.front.crop": {"x": 0, "y": 0, "w": 96, "h": 96}})
    tree = yaml.safe_load(config.read_text())
    assert tree["cameras"][1]["crop"] == {"x": 0, "y": 0, "w": 96, "h": 96}
    assert tree["cameras"][0]["crop"] == {"x": 8, "y": 0, "w": 80, "h": 80}
    assert "crop: {x: 0, y: 0, w: 96, h: 96}" in config.read_text()


@pytest.mark.parametrize(
    ("edits", "field", "reason"),
    [
        ({"workspace.low": [0.5, 0.0, 0.1], "workspace.high": [0.4, 0.2, 0.3]}, "workspace", "low[x]=0.5"),
        ({"cameras.wrist.crop": {"x": 40, "y": 0, "w": 80, "h": 80}}, "cameras.wrist.crop", "does not fit"),
        ({"arm.home_joints": [0.0, 1.0]}, "arm.home_joints", "at least 7"),
        ({"cameras.nope.crop": {"x": 0, "y": 0, "w": 8, "h": 8}}, "cameras.nope", "no item named 'nope'"),
        ({"arm.no_such_key": 1}, "arm.no_such_key", "Extra inputs"),
    ],
)
def test_invalid_edit_refused_naming_the_field_and_file_untouched(
    config: Path, edits: dict, field: str, reason: str
) -> None:
    before = config.read_text()
    with pytest.raises(ConfigEditError) as err:
        edit_config(config, edits)
    assert err.value.field.startswith(field)
    assert reason in str(err.value)
    assert config.read_text() == before
    assert not backup_path(config).exists()
    assert sorted(p.name for p in config.parent.iterdir()) == [config.name]


def test_write_is_atomic_when_the_replace_fails(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = config.read_text()
    real_replace = os.replace

    def failing_replace(src, dst):
        if Path(dst) == config:
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        edit_config(config, {"workspace.low": [0.3, -0.2, 0.03]})
    assert config.read_text() == before  # the old file, whole
    assert not [p for p in config.parent.iterdir() if p.name.endswith(".tmp")]


def test_backup_holds_the_previous_version_each_time(config: Path) -> None:
    first = config.read_text()
    edit_config(config, {"arm.home_joints": [0.0, -0.1, 0.0, -2.5, 0.0, 2.4, 0.78]})
    second = config.read_text()
    assert backup_path(config).read_text() == first
    edit_config(config, {"arm.home_joints": [0.1, -0.1, 0.0, -2.5, 0.0, 2.4, 0.78]})
    assert backup_path(config).read_text() == second
    assert os.stat(config).st_mode == os.stat(backup_path(config)).st_mode


# --- workspace box and home --------------------------------------------------------------------
def test_box_from_points_with_margin() -> None:
    pts = [[0.40, -0.10, 0.05], [0.60, 0.12, 0.25], [0.50, 0.0, 0.10]]
    box = propose_box(pts, margin_m=0.02)
    assert box.low == [0.38, -0.12, 0.03]
    assert box.high == [0.62, 0.14, 0.27]
    assert workspace_edits(box) == {"workspace.low": box.low, "workspace.high": box.high}


@pytest.mark.parametrize(
    ("points", "margin", "field", "words"),
    [
        ([], 0.0, "points", "at least 2 distinct"),
        ([[0.5, 0.0, 0.1], [0.5, 0.0, 0.1005]], 0.0, "points", "have 1"),
        ([[0.4, -0.1, 0.1], [0.6, 0.1, 0.13]], 0.0, "workspace", "3.0 cm along z"),
        ([[0.4, -0.1, 0.1], [0.6, 0.1, 0.2]], -0.01, "margin_m", "between 0"),
        ([[0.4, -0.1], [0.6, 0.1, 0.2]], 0.0, "points", "3 finite numbers"),
    ],
)
def test_box_refusals_name_the_problem(points, margin, field, words) -> None:
    with pytest.raises(ConfigEditError) as err:
        propose_box(points, margin)
    assert err.value.field == field
    assert words in err.value.message


def test_thin_box_is_fine_with_a_margin() -> None:
    box = propose_box([[0.4, -0.1, 0.1], [0.6, 0.1, 0.13]], margin_m=0.01)
    assert box.high[2] - box.low[2] >= MIN_EXTENT_M


def test_point_log_and_home_edits() -> None:
    log = PointLog()
    log.add(np.array([0.4, 0.0, 0.2]))
    log.add([0.5, 0.1, 0.3])
    assert log.positions() == [[0.4, 0.0, 0.2], [0.5, 0.1, 0.3]]
    assert log.clear() == 2 and log.positions() == []
    assert home_edits(np.arange(7) * 0.1)["arm.home_joints"][3] == 0.3
    with pytest.raises(ConfigEditError, match="arm.home_joints"):
        home_edits([0.0] * 6)
    with pytest.raises(ConfigEditError, match="arm.home_joints"):
        home_edits([0.0] * 6 + [float("nan")])


# --- crops -------------------------------------------------------------------------------------
def test_crop_checked_against_the_full_resolution() -> None:
    cam = load_config(SIM_YAML, env={}).camera("front")  # 128 x 96, output 64 x 64
    assert check_crop(cam, {"x": 16, "y": 0, "w": 96, "h": 96}).w == 96
    cases = [
        ({"x": 40, "y": 0, "w": 96, "h": 96}, "cameras.front.crop.w", "40 + 96 = 136 is beyond the camera's full width 128"),
        ({"x": 130, "y": 0, "w": 8, "h": 8}, "cameras.front.crop.x", "beyond the camera's full width 128"),
        ({"x": 0, "y": 10, "w": 90, "h": 90}, "cameras.front.crop.h", "full height 96"),
        ({"x": -1, "y": 0, "w": 8, "h": 8}, "cameras.front.crop.x", ">= 0"),
        ({"x": 0, "y": 0, "w": 0, "h": 8}, "cameras.front.crop.w", "> 0"),
        ({"x": 0.5, "y": 0, "w": 8, "h": 8}, "cameras.front.crop.x", "integer"),
    ]
    for rect, field, words in cases:
        with pytest.raises(ConfigEditError) as err:
            check_crop(cam, rect)
        assert err.value.field == field, rect
        assert words in err.value.message, rect
    with pytest.raises(ConfigEditError, match="rect.h"):
        parse_rect("1,2,3,four")
    with pytest.raises(ConfigEditError, match="x,y,w,h"):
        parse_rect("1,2,3")
    assert aspect_note(cam, check_crop(cam, {"x": 0, "y": 0, "w": 128, "h": 96})) is not None
    assert aspect_note(cam, check_crop(cam, {"x": 0, "y": 0, "w": 96, "h": 96})) is None


def test_crop_preview_draws_the_rectangle_and_the_policy_view() -> None:
    cam = load_config(SIM_YAML, env={}).camera("front")
    img = np.full((96, 128, 3), 90, dtype=np.uint8)
    img[20:40, 30:50] = (0, 200, 0)
    crop = check_crop(cam, {"x": 20, "y": 10, "w": 60, "h": 60})
    out = preview(img, cam, crop)
    assert out.shape[0] == 96 and out.shape[1] > 128
    full = out[:, :128]
    assert tuple(full[10, 50]) == (255, 40, 40)  # top edge of the rectangle
    assert tuple(full[40, 20]) == (255, 40, 40)  # left edge
    assert tuple(full[50, 100]) == (90, 90, 90)  # outside: untouched
    side = out[:, -96:]  # the 64x64 policy view scaled to the frame height: the green patch shows
    assert (side[:, :, 1] > 150).sum() > 200
    with pytest.raises(ValueError, match="128x96"):
        preview(np.zeros((48, 64, 3), np.uint8), cam, crop)


# --- the CLI (no robot needed) -----------------------------------------------------------------
def test_cli_workspace_points_and_home_joints(config: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(cli_app, ["calibrate", "workspace", "--config", str(config),
                                "--points", "0.4,-0.1,0.05; 0.6,0.12,0.25", "--margin", "0.01"])
    assert r.exit_code == 0, r.output
    assert "takes effect at the next daemon start" in r.output
    ws = load_config(config, env={}).workspace
    assert ws.low == [0.39, -0.11, 0.04] and ws.high == [0.61, 0.13, 0.26]

    r = runner.invoke(cli_app, ["calibrate", "workspace", "--config", str(config), "--points", "0.4,-0.1,0.05"])
    assert r.exit_code == 2 and "at least 2 distinct points" in r.output

    r = runner.invoke(cli_app, ["calibrate", "home", "--config", str(config), "--joints", "0,-0.1,0,-2.5,0,2.4,0.78"])
    assert r.exit_code == 0, r.output
    assert load_config(config, env={}).arm.home_joints == [0, -0.1, 0, -2.5, 0, 2.4, 0.78]


def test_cli_crop_with_image_and_preview(config: Path, tmp_path: Path) -> None:
    snap = tmp_path / "snap.png"
    cv2.imwrite(str(snap), np.full((96, 96, 3), 120, np.uint8))
    out = tmp_path / "preview.png"
    runner = CliRunner()
    args = ["calibrate", "crop", "--config", str(config), "--camera", "wrist", "--rect", "4,4,88,88",
            "--image", str(snap), "--preview", str(out)]
    r = runner.invoke(cli_app, args)
    assert r.exit_code == 0, r.output
    assert load_config(config, env={}).camera("wrist").crop.model_dump() == {"x": 4, "y": 4, "w": 88, "h": 88}
    prev = cv2.imread(str(out))
    assert prev is not None and prev.shape[0] == 96

    before = config.read_text()
    r = runner.invoke(cli_app, ["calibrate", "crop", "--config", str(config), "--camera", "wrist", "--rect", "10,0,90,90"])
    assert r.exit_code == 2
    assert "cameras.wrist.crop.w" in r.output and "full width 96" in r.output
    assert config.read_text() == before
    r = runner.invoke(cli_app, ["calibrate", "crop", "--config", str(config), "--camera", "side", "--rect", "0,0,8,8"])
    assert r.exit_code == 2 and "no camera 'side'" in r.output
