"""The daemon's loaded classifiers (forward goal C_f, backward state-matching C_b), for scoring
recorded frames on the review page.

The control thread never uses them, so there is no staging: an upload is validated on an API
worker thread (policies.classifier_intake), uploads are serialised so "newer than the loaded
version" holds, and the new runner replaces the old one. Every accepted checkpoint is kept in the
checkpoint dir and loaded again at the next daemon start. Torch is imported at the first upload,
not with the daemon.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spec.direction import DIRECTIONS
from spec.files import atomic_write_bytes
from spec.step import ObsSpec

if TYPE_CHECKING:
    from policies.classifier_intake import ValidatedClassifier

log = logging.getLogger(__name__)


class ClassifierSlots:
    def __init__(self, checkpoint_dir: Path | None, obs_spec: ObsSpec) -> None:
        self.checkpoint_dir = checkpoint_dir
        self.obs_spec = obs_spec  # what the robot provides (the store's step description)
        self._intake = threading.Lock()  # one upload at a time: "newer than the loaded version" holds
        self._lock = threading.Lock()  # guards the loaded set only, so reads never wait for a validation
        self._loaded: dict[str, ValidatedClassifier] = {}
        self._received_at: dict[str, float] = {}
        self.rejected = 0

    def accept(self, direction: str, raw: bytes, persist: bool = True) -> dict[str, Any]:
        """Validate and load; raises CheckpointRejected (the loaded classifier stays)."""
        from policies.classifier_intake import validate_classifier
        from policies.intake import CheckpointRejected

        with self._intake:
            current = self.loaded().get(direction)
            try:
                validated = validate_classifier(raw, direction, self.obs_spec, None if current is None else current.version)
            except CheckpointRejected:
                self.rejected += 1
                raise
            with self._lock:
                self._loaded[direction] = validated
                self._received_at[direction] = time.time()
            if persist:  # under the intake lock: the file on disk is the newest version too
                self._persist(direction, validated.version, raw)
        return {"direction": direction, **self._describe(validated)}

    def loaded(self) -> dict[str, ValidatedClassifier]:
        """The classifiers loaded now, by direction (a snapshot)."""
        with self._lock:
            return dict(self._loaded)

    def summary(self) -> dict[str, Any]:
        loaded = self.loaded()
        out: dict[str, Any] = {d: (self._describe(loaded[d]) if d in loaded else None) for d in DIRECTIONS}
        out["rejected"] = self.rejected
        return out

    def _describe(self, v: ValidatedClassifier) -> dict[str, Any]:
        ckpt = v.checkpoint
        return {
            "version": ckpt.version,
            "training_step": ckpt.step,
            "mode": ckpt.obs_spec.mode,
            "cameras": list(ckpt.cameras),
            "size_bytes": v.size_bytes,
            "sha256": ckpt.sha256,
            "received_at": self._received_at.get(ckpt.direction),
        }

    # --- persistence: a restarted daemon scores with the last accepted classifiers ---
    def _path(self, direction: str) -> Path:
        assert self.checkpoint_dir is not None
        return self.checkpoint_dir / f"classifier-{direction}.safetensors"

    def _persist(self, direction: str, version: int, raw: bytes) -> None:
        if self.checkpoint_dir is None:
            return
        try:
            atomic_write_bytes(self._path(direction), raw, fsync=True)
            info = {"version": version, "saved_at": time.time()}
            atomic_write_bytes(self._path(direction).with_suffix(".json"), json.dumps(info).encode(), fsync=True)
        except OSError as exc:  # scoring with the classifier matters more than its copy on disk
            log.warning("could not save the %s classifier: %s", direction, exc)

    def restore(self) -> None:
        """Load the classifiers saved by a previous run; a file that no longer fits is skipped."""
        from policies.intake import CheckpointRejected

        if self.checkpoint_dir is None:
            return
        for d in DIRECTIONS:
            path = self._path(d)
            if not path.is_file():
                continue
            try:
                self.accept(d, path.read_bytes(), persist=False)
                log.info("restored the %s classifier from %s", d, self.checkpoint_dir)
            except (CheckpointRejected, OSError) as exc:
                log.warning("stored %s classifier not restored: %s", d, getattr(exc, "message", exc))
