"""Policy checkpoint format and the daemon's intake (status codes the API will answer with)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import save as st_save

from policies.checkpoint import FORMAT, CheckpointError, PolicyCheckpoint, payload_sha256, read_metadata
from policies.intake import CheckpointRejected, validate_checkpoint
from policies.networks import PRESETS, Policy
from spec.step import CameraSpec, ObsSpec

torch.set_num_threads(1)
TINY = PRESETS["tiny"]
SPEC = ObsSpec("pixels", (CameraSpec("wrist", 32, 32, {"x": 0, "y": 0, "w": 32, "h": 32}),
                          CameraSpec("front", 32, 32, None)), 4)
ACTION = {"dim": 4, "yaw": False, "max_translation_m": 0.02, "max_yaw_rad": 0.2,
          "layout": ["dx", "dy", "dz", "gripper"], "workspace": {"low": [0.3, -0.25, 0.02], "high": [0.7, 0.25, 0.4]}}


def make_ckpt(direction: str = "forward", version: int = 5, spec: ObsSpec = SPEC) -> PolicyCheckpoint:
    torch.manual_seed(0)
    return PolicyCheckpoint.from_policy(Policy(spec, 4, TINY), direction, version, spec, ACTION, TINY, step=123)


def resave(ckpt: PolicyCheckpoint, tensors: dict[str, torch.Tensor] | None = None, **meta: str) -> bytes:
    """Re-serialise with edited tensors/metadata (sha256 recomputed unless given)."""
    data = ckpt.to_bytes()
    m = read_metadata(data)
    t = dict(ckpt.tensors if tensors is None else tensors)
    m["sha256"] = payload_sha256(t)
    m.update(meta)
    return st_save({k: v.contiguous() for k, v in t.items()}, metadata=m)


def rejected(data: bytes, direction: str = "forward", spec: ObsSpec = SPEC, action: dict | None = None,
             active: int | None = None) -> CheckpointRejected:
    with pytest.raises(CheckpointRejected) as info:
        validate_checkpoint(data, direction, spec, ACTION if action is None else action, active, num_threads=None)
    return info.value


def test_round_trip_keeps_tensors_and_metadata():
    ckpt = make_ckpt()
    data = ckpt.to_bytes()
    back = PolicyCheckpoint.from_bytes(data)
    assert back.version == 5 and back.direction == "forward" and back.step == 123
    assert back.obs_spec == SPEC and back.action_spec == ACTION and back.sizes == TINY
    assert back.sha256 == ckpt.sha256 == payload_sha256(back.tensors)
    assert set(back.tensors) == set(ckpt.tensors)
    for k in ckpt.tensors:
        assert torch.equal(back.tensors[k], ckpt.tensors[k])
    meta = read_metadata(data)
    assert meta["format"] == FORMAT and json.loads(meta["obs_spec"])["cameras"][0]["name"] == "wrist"


def test_hash_is_canonical_and_detects_tampering():
    ckpt = make_ckpt()
    reordered = dict(reversed(list(ckpt.tensors.items())))
    assert payload_sha256(reordered) == ckpt.sha256
    data = bytearray(ckpt.to_bytes())
    data[-7] ^= 0x01  # flip one bit of the last tensor's bytes
    err = rejected(bytes(data))
    assert err.status_code == 400 and "sha256" in err.message


@pytest.mark.parametrize(
    "data, fragment",
    [
        (b"", "only 0 bytes"),
        (b"hello world, not a checkpoint", "header length"),
        (struct.pack("<Q", 4) + b"{{{{", "not JSON"),
        (st_save({"x": torch.zeros(2)}), "no __metadata__"),
        (st_save({"x": torch.zeros(2)}, metadata={"format": "something/else"}), "format is"),
        (st_save({"x": torch.zeros(2)}, metadata={"format": FORMAT}), "missing"),
    ],
)
def test_garbage_is_a_400_with_a_reason(data: bytes, fragment: str):
    err = rejected(data)
    assert err.status_code == 400
    assert fragment in err.message


def test_truncated_file_is_a_400():
    data = make_ckpt().to_bytes()
    for cut in (len(data) // 2, len(data) - 1, 100):
        err = rejected(data[:cut])
        assert err.status_code == 400, err.message


def test_missing_extra_and_misshapen_tensors_are_refused():
    ckpt = make_ckpt()
    t = dict(ckpt.tensors)
    name = sorted(t)[0]
    missing = {k: v for k, v in t.items() if k != name}
    with pytest.raises(CheckpointError, match="missing tensors"):
        PolicyCheckpoint.from_bytes(resave(ckpt, missing))
    with pytest.raises(CheckpointError, match="unexpected tensors"):
        PolicyCheckpoint.from_bytes(resave(ckpt, t | {"critic.w": torch.zeros(3)}))
    bad = t | {"actor.policy.4.bias": torch.zeros(3)}
    with pytest.raises(CheckpointError, match=r"actor.policy.4.bias has shape \[3\], expected \[8\]"):
        PolicyCheckpoint.from_bytes(resave(ckpt, bad))
    with pytest.raises(CheckpointError, match="version"):
        PolicyCheckpoint.from_bytes(resave(ckpt, version="seven"))


def test_intake_accepts_a_good_checkpoint_and_gives_a_runner():
    v = validate_checkpoint(make_ckpt(version=7).to_bytes(), "forward", SPEC, ACTION, 6, num_threads=None)
    assert v.version == 7 and v.metadata["direction"] == "forward" and v.metadata["size_bytes"] > 0
    a = v.runner.act(SPEC.zero_observation(), deterministic=True)
    assert a.shape == (4,) and np.all(np.isfinite(a))
    # No active policy yet: any version is accepted.
    assert validate_checkpoint(make_ckpt(version=0).to_bytes(), "forward", SPEC, ACTION, None, num_threads=None)


def test_intake_status_codes_for_direction_spec_and_version():
    data = make_ckpt(direction="backward", version=3).to_bytes()
    err = rejected(data, direction="forward")
    assert err.status_code == 422 and "backward" in err.message and "direction" in err.message

    other_cams = ObsSpec("pixels", (CameraSpec("wrist", 64, 64, SPEC.cameras[0].crop), CameraSpec("front", 64, 64)), 4)
    err = rejected(data, direction="backward", spec=other_cams)
    assert err.status_code == 422 and err.message.startswith("obs.cameras[wrist].height")

    recropped = ObsSpec("pixels", (CameraSpec("wrist", 32, 32, {"x": 5, "y": 0, "w": 32, "h": 32}),
                                   SPEC.cameras[1]), 4)
    err = rejected(data, direction="backward", spec=recropped)
    assert err.status_code == 422 and "crop" in err.message

    err = rejected(data, direction="backward", action=ACTION | {"max_translation_m": 0.03})
    assert err.status_code == 422 and "action.max_translation_m" in err.message
    err = rejected(data, direction="backward", action=ACTION | {"dim": 5})
    assert err.status_code == 422 and "action.dim" in err.message

    for active in (3, 4):
        err = rejected(data, direction="backward", active=active)
        assert err.status_code == 409 and "not newer" in err.message
    assert validate_checkpoint(data, "backward", SPEC, ACTION, 2, num_threads=None).version == 3


def test_intake_smoke_test_refuses_nan_weights():
    ckpt = make_ckpt()
    t = {k: (torch.full_like(v, float("nan")) if k == "actor.policy.4.bias" else v) for k, v in ckpt.tensors.items()}
    err = rejected(resave(ckpt, t))
    assert err.status_code == 422 and "non-finite" in err.message


def test_state_policy_fits_a_sim_daemon_that_provides_state():
    state_spec = ObsSpec("state", (), 4, state_dim=6)
    data = make_ckpt(spec=state_spec).to_bytes()
    daemon = ObsSpec("pixels", SPEC.cameras, 4, state_dim=6)
    v = validate_checkpoint(data, "forward", daemon, ACTION, None, num_threads=None)
    obs = daemon.zero_observation()
    assert "obs/state" in obs and v.runner.act(obs).shape == (4,)
    err = rejected(data, spec=ObsSpec("pixels", SPEC.cameras, 4, state_dim=9))
    assert err.status_code == 422 and "state_dim" in err.message


class _Boom:
    """Unpickling this would create a file: the proof that nothing was unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("wrap", ["raw_pickle", "torch_save"])
def test_pickle_payloads_are_refused_without_being_unpickled(tmp_path, wrap):
    import io
    import pickle

    marker = tmp_path / "unpickled"
    payload = {"policy": _Boom(str(marker)), "version": 99}
    if wrap == "raw_pickle":
        data = pickle.dumps(payload)
    else:  # what a careless learner would send: torch.save of a state dict with a trap in it
        buf = io.BytesIO()
        torch.save(payload, buf)
        data = buf.getvalue()
    err = rejected(data)
    assert err.status_code == 400
    assert not marker.exists(), "the checkpoint was unpickled"
