"""Classifier checkpoint format and the daemon's classifier intake (status codes the API answers with)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save as st_save

from policies.checkpoint import CheckpointError, PolicyCheckpoint
from policies.checkpoint_format import payload_sha256, read_metadata
from policies.classifier_checkpoint import FORMAT, ClassifierCheckpoint
from policies.classifier_intake import validate_classifier
from policies.intake import CheckpointRejected
from policies.networks import PRESETS, Classifier, Policy
from spec.step import CameraSpec, ObsSpec

torch.set_num_threads(1)
TINY = PRESETS["tiny"]
SPEC = ObsSpec("pixels", (CameraSpec("wrist", 32, 32, {"x": 0, "y": 0, "w": 32, "h": 32}),
                          CameraSpec("front", 32, 32, None)), 4, state_dim=6)
ACTION = {"dim": 4, "yaw": False, "max_translation_m": 0.02, "max_yaw_rad": 0.2,
          "layout": ["dx", "dy", "dz", "gripper"], "workspace": {"low": [0.3, -0.25, 0.02], "high": [0.7, 0.25, 0.4]}}


def make(direction: str = "forward", version: int = 5, spec: ObsSpec = SPEC, cameras: list[str] | None = None,
         ) -> tuple[Classifier, ClassifierCheckpoint]:
    torch.manual_seed(0)
    net = Classifier(spec, TINY, ["wrist"] if cameras is None and spec.mode == "pixels" else cameras)
    # A few training-mode passes move the spectral-norm power-iteration vectors off their init.
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randint(0, 256, (2, *spec.image_size, spec.channels), dtype=torch.uint8)
                if spec.mode == "pixels" else torch.randn(2, int(spec.state_dim or 0)))
    return net.eval(), ClassifierCheckpoint.from_classifier(net, direction, version, spec, TINY, step=version)


def resave(ckpt: ClassifierCheckpoint, tensors: dict[str, torch.Tensor] | None = None, sha: bool = True,
           **meta: str) -> bytes:
    """Re-serialise with edited tensors/metadata (sha256 recomputed unless `sha` is False)."""
    m = read_metadata(ckpt.to_bytes(), FORMAT, what="classifier", required=())
    t = dict(ckpt.tensors if tensors is None else tensors)
    if sha:
        m["sha256"] = payload_sha256(t)
    m.update(meta)
    return st_save({k: v.contiguous() for k, v in t.items()}, metadata=m)


def rejected(data: bytes, direction: str = "forward", spec: ObsSpec = SPEC, active: int | None = None
             ) -> CheckpointRejected:
    with pytest.raises(CheckpointRejected) as info:
        validate_classifier(data, direction, spec, active, num_threads=None)
    return info.value


def test_round_trip_keeps_weights_spectral_norm_state_and_scores():
    net, ckpt = make()
    back = ClassifierCheckpoint.from_bytes(ckpt.to_bytes())
    assert (back.direction, back.version, back.step, back.cameras) == ("forward", 5, 5, ["wrist"])
    assert back.obs_spec == SPEC and back.sizes == TINY and back.sha256 == ckpt.sha256
    assert any(k.endswith("parametrizations.weight.0._u") for k in back.tensors)
    for k, v in ckpt.tensors.items():
        assert torch.equal(back.tensors[k], v)
    frames = torch.randint(0, 256, (5, 32, 32, 6), dtype=torch.uint8)
    with torch.no_grad():
        expected = torch.sigmoid(net(frames)).numpy()
    v = validate_classifier(ckpt.to_bytes(), "forward", SPEC, active_version=4, num_threads=None)
    got = v.runner.probabilities({"obs/wrist": frames[..., :3].numpy(), "obs/front": frames[..., 3:].numpy()})
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert v.metadata["format"] == FORMAT and v.metadata["cameras"] == ["wrist"]


def test_a_state_mode_classifier_fits_a_daemon_that_records_state():
    state = ObsSpec("state", (), 4, state_dim=6)
    _, ckpt = make(spec=state)
    v = validate_classifier(ckpt.to_bytes(), "forward", SPEC, None, num_threads=None)
    p = v.runner.probabilities({"obs/state": np.zeros((3, 6), np.float32)})
    assert p.shape == (3,) and np.all(np.isfinite(p))


def test_tampered_tensors_are_refused_by_the_hash():
    _, ckpt = make()
    tensors = dict(ckpt.tensors)
    name = next(k for k in tensors if k.endswith("_u"))
    tensors[name] = tensors[name] * 2
    err = rejected(resave(ckpt, tensors, sha=False))
    assert err.status_code == 400 and "sha256" in err.message
    with pytest.raises(CheckpointError, match="sha256"):
        ClassifierCheckpoint.from_bytes(resave(ckpt, tensors, sha=False))


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        ("drop_u", "missing tensors"),
        ("extra", "unexpected tensors"),
        ("bigger_network", "shape"),
        ("cameras_both", "shape"),  # the first convolution of a wrist-only classifier has 3 input channels, not 6
        ("unknown_camera", "cannot build a classifier"),
        ("float64", "dtype"),
    ],
)
def test_tensors_that_do_not_match_the_metadata_are_a_400(edit: str, fragment: str):
    _, ckpt = make()
    tensors, meta = dict(ckpt.tensors), {}
    if edit == "drop_u":
        del tensors[next(k for k in tensors if k.endswith("_u"))]
    elif edit == "extra":
        tensors["head.9.weight"] = torch.zeros(1)
    elif edit == "bigger_network":
        meta["network"] = '{"hidden_dim": 64, "feature_dim": 16, "num_critics": 2, "encoder_channels": 8}'
    elif edit == "cameras_both":
        meta["cameras"] = '["wrist", "front"]'
    elif edit == "unknown_camera":
        meta["cameras"] = '["top"]'
    elif edit == "float64":
        tensors = {k: v.double() for k, v in tensors.items()}
    err = rejected(resave(ckpt, tensors, **meta))
    assert err.status_code == 400 and fragment in err.message, err.message


def test_other_files_are_a_400_without_being_unpickled(tmp_path):
    policy = PolicyCheckpoint.from_policy(Policy(SPEC, 4, TINY), "forward", 1, SPEC, ACTION, TINY).to_bytes()
    assert "medalpp-classifier/1" in rejected(policy).message
    buf = io.BytesIO()
    torch.save(make()[0].state_dict(), buf)  # a pickle: never loaded
    assert rejected(buf.getvalue()).status_code == 400
    assert rejected(b"").status_code == 400


def test_intake_status_codes_for_direction_spec_version_and_nan():
    _, ckpt = make(direction="forward", version=5)
    raw = ckpt.to_bytes()
    assert rejected(raw, direction="backward").status_code == 422
    err = rejected(raw, active=5)
    assert err.status_code == 409 and "not newer" in err.message
    other = ObsSpec("pixels", (CameraSpec("wrist", 48, 48, None), CameraSpec("front", 48, 48, None)), 4)
    err = rejected(raw, spec=other)
    assert err.status_code == 422 and "height" in err.message
    nan = {k: (torch.full_like(v, float("nan")) if k.startswith("head.2.") else v) for k, v in ckpt.tensors.items()}
    err = rejected(resave(ckpt, nan))
    assert err.status_code == 422 and "smoke test" in err.message


def test_checking_a_classifier_keeps_torchs_decompositions_out_of_the_daemon():
    # Spectral norm's power iteration on meta tensors would import sympy, dynamo and the rest of
    # torch's Python decompositions (~70 MB, seconds holding the GIL beside the 10 Hz tick).
    code = (
        "import sys, torch\n"
        "from tests.test_classifier_checkpoint import SPEC, make\n"
        "from policies.classifier_intake import validate_classifier\n"
        "validate_classifier(make()[1].to_bytes(), 'forward', SPEC, None)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith(('sympy', 'torch._dynamo'))}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", out.stdout
