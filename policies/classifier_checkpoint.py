"""The classifier checkpoint: one MEDAL++ classifier (goal or state-matching) as one safetensors file.

Same container and safety as the policy checkpoint (policies/checkpoint_format.py): a format tag of its own, the
direction, observation spec, network sizes, the views it looks at, a version (the learner's
classifier step count, above the daemon's active version), and a canonical sha256 of the tensors,
all in the `__metadata__` header; loading is safetensors parsing only, never unpickling. Tensor
names and shapes must be exactly those of a `Classifier` built from the metadata on the meta
device, spectral-norm parametrizations (`…parametrizations.weight.original`, `…0._u`, `…0._v`)
included: the stored power-iteration vectors are what an eval-mode spectral norm divides by.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from policies import checkpoint_format as fmt
from policies.checkpoint_format import CheckpointError, check_tensor_shapes, meta_field
from policies.networks import Classifier, NetworkSizes
from spec.step import ObsSpec

FORMAT = "medalpp-classifier/1"
_REQUIRED = (*fmt.COMMON_KEYS, "cameras")


@dataclass
class ClassifierCheckpoint:
    tensors: dict[str, torch.Tensor]
    direction: str  # forward: the goal classifier C_f; backward: the state-matching classifier C_b
    version: int
    obs_spec: ObsSpec
    sizes: NetworkSizes
    cameras: list[str]  # the views it looks at (pixels); every view of the spec in state mode
    step: int = 0  # the learner's classifier step count when it was saved
    created_at: str = field(default_factory=fmt.now_iso)
    sha256: str = ""

    def __post_init__(self) -> None:
        fmt.check_fields(self)

    @classmethod
    def from_classifier(
        cls, net: Classifier, direction: str, version: int, obs_spec: ObsSpec, sizes: NetworkSizes, step: int = 0
    ) -> ClassifierCheckpoint:
        return cls(fmt.module_tensors(net), direction, int(version), obs_spec, sizes, list(net.cameras), int(step))

    def build_classifier(self) -> Classifier:
        """The classifier with these weights (CPU, eval mode: no power iteration, deterministic)."""
        net = Classifier(self.obs_spec, self.sizes, self.cameras)
        net.load_state_dict(self.tensors, strict=True)
        return net.eval()

    @property
    def metadata(self) -> dict[str, Any]:
        return {**fmt.common_metadata(self, FORMAT), "cameras": list(self.cameras)}

    def to_bytes(self) -> bytes:
        return fmt.to_bytes(self, FORMAT, {"cameras": json.dumps(list(self.cameras))})

    @classmethod
    def from_bytes(cls, data: bytes) -> ClassifierCheckpoint:
        meta, tensors, h = fmt.read_checkpoint(data, FORMAT, _REQUIRED, what="classifier")
        cameras = meta_field(meta, "cameras", _camera_list)
        try:
            expected = dict(_expected_shapes(h.obs_spec.to_json(), json.dumps(h.sizes.to_dict(), sort_keys=True),
                                             json.dumps(cameras)))
        except (ValueError, RuntimeError) as exc:
            raise CheckpointError(f"cannot build a classifier from the metadata: {exc}") from None
        check_tensor_shapes(tensors, expected)
        return cls(tensors, h.direction, h.version, h.obs_spec, h.sizes, cameras, h.step, h.created_at, h.sha256)


class _SpectralNormShapes(nn.Module):
    """Torch's spectral-norm parametrization as far as the state dict sees it: the power-iteration
    vectors `_u` [out] and `_v` [in·kh·kw] (dim 0, as for Linear and Conv2d), without computing them.
    Its power iteration on meta tensors would run through Python meta kernels, whose first use
    imports torch's decompositions (sympy, dynamo: ~70 MB and seconds of the GIL) into the daemon."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        mat = weight.flatten(1)
        self.register_buffer("_u", weight.new_empty(mat.shape[0]))
        self.register_buffer("_v", weight.new_empty(mat.shape[1]))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight


def _spectral_norm_shapes(module: nn.Module) -> nn.Module:
    parametrize.register_parametrization(module, "weight", _SpectralNormShapes(module.weight), unsafe=True)
    return module


@functools.lru_cache(maxsize=8)
def _expected_shapes(spec_json: str, sizes_json: str, cameras_json: str) -> tuple[tuple[str, torch.Size], ...]:
    """The state-dict names and shapes of the classifier the metadata describes, built on the meta
    device (shapes only, no memory for a robot-size model); cached, as every push of one learner
    carries the same metadata."""
    spec = ObsSpec.from_json(spec_json)
    sizes = NetworkSizes.from_dict(json.loads(sizes_json))
    with torch.device("meta"):
        net = Classifier(spec, sizes, json.loads(cameras_json), norm=_spectral_norm_shapes)
    return tuple((k, v.shape) for k, v in net.state_dict().items())


def _camera_list(text: str) -> list[str]:
    cams = json.loads(text)
    if not isinstance(cams, list) or not all(isinstance(c, str) for c in cams):
        raise ValueError("cameras must be a JSON list of camera names")
    return cams
