"""Per-frame review data of recorded episodes: what each step did, both classifiers' scores, the views.

Runs on API worker threads, never the control thread, and reads committed steps only (an open
episode is being written: its `length` attribute is what is on disk whole). Scores are σ(C(s)) of
each loaded classifier, computed in batches and cached per (episode, direction, classifier
version): a growing episode only scores its new steps, and a new classifier version starts afresh.
Each job has its own store reader (ReplayReader keeps an unsynchronised array cache), so a long
first scoring never holds up the frames the page is playing.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from replay.location import StoreLocation
from replay.store import ReplayReader
from robot_server.classifier_slots import ClassifierSlots

if TYPE_CHECKING:
    from policies.classifier_intake import ValidatedClassifier

SCORE_CACHE_ENTRIES = 64  # (episode, direction, version) score arrays kept; 4 bytes a step each
JPEG_QUALITY = 90
READ_BLOCK = 256  # steps read from the store per scoring pass: bounds memory on long episodes


class ReviewNotFound(LookupError):
    """An unknown episode, step or camera; the message names it (HTTP 404)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class EpisodeReview:
    def __init__(self, store_path: Path | StoreLocation, classifiers: ClassifierSlots) -> None:
        self.store_path = store_path  # a directory or a replay.location.StoreLocation
        self.classifiers = classifiers
        self._rows_lock, self._score_lock = threading.Lock(), threading.Lock()
        self._rows_reader: ReplayReader | None = None
        self._score_reader: ReplayReader | None = None
        self._scores: OrderedDict[tuple[str, str, int], np.ndarray] = OrderedDict()

    # --- per-step rows ---
    def steps(self, episode_id: str) -> dict[str, Any]:
        """The episode's committed steps with each loaded classifier's score per step."""
        with self._rows_lock, _missing_is_not_found(episode_id):
            reader = self._rows_reader = self._rows_reader or ReplayReader(self.store_path)
            reader.refresh()  # the writer may have recorded a compatible change of the store's metadata
            info = reader.episode(episode_id)
            n = info.length  # one length for every column, though the writer may commit more meanwhile
            data = reader.read(episode_id, keys=["timestamp", "action", "policy_version", "intervention"], stop=n)
            cameras = [c["name"] for c in reader.meta["cameras"]]
            rate_hz = float(reader.meta["rate_hz"])
        loaded = self.classifiers.loaded()
        scores = {d: self._scored(episode_id, d, v, n) for d, v in loaded.items()}
        phase = info.attrs.get("phase")
        rows = [
            {
                "index": i,
                "timestamp": float(data["timestamp"][i]),
                "direction": info.direction,
                "phase": phase,
                "action": [float(a) for a in data["action"][i]],
                "policy_version": int(data["policy_version"][i]),
                "intervention": bool(data["intervention"][i]),
                "scores": {d: float(s[i]) for d, s in scores.items()},
            }
            for i in range(n)
        ]
        return {
            "episode": info.id,
            "kind": info.kind,
            "direction": info.direction,
            "phase": phase,
            "closed": info.closed,
            "success": info.success,
            "length": n,
            "rate_hz": rate_hz,
            "cameras": cameras,
            "classifiers": {
                d: {"version": v.version, "training_step": v.checkpoint.step, "cameras": list(v.checkpoint.cameras)}
                for d, v in loaded.items()
            },
            "steps": rows,
        }

    def _scored(self, episode_id: str, direction: str, validated: ValidatedClassifier, n: int) -> np.ndarray:
        """Scores of steps [0, n): cached ones, plus the steps committed since."""
        key = (episode_id, direction, validated.version)
        runner = validated.runner
        with self._score_lock, _missing_is_not_found(episode_id):
            reader = self._score_reader = self._score_reader or ReplayReader(self.store_path)
            have = self._scores.pop(key, np.empty(0, np.float32))
            parts = [have]
            for start in range(len(have), n, READ_BLOCK):
                frames = reader.read(episode_id, keys=runner.keys, start=start, stop=min(n, start + READ_BLOCK))
                parts.append(runner.probabilities(frames))
            scores = np.concatenate(parts) if len(parts) > 1 else have
            self._scores[key] = scores  # most recently used last
            while len(self._scores) > SCORE_CACHE_ENTRIES:
                self._scores.popitem(last=False)
            return scores[:n]

    # --- camera views ---
    def frame_jpeg(self, episode_id: str, step: int, camera: str | None) -> bytes:
        """The stored (policy) view of one committed step as JPEG; the first camera by default."""
        with self._rows_lock, _missing_is_not_found(episode_id):
            reader = self._rows_reader = self._rows_reader or ReplayReader(self.store_path)
            info = reader.episode(episode_id)
            cameras = [c["name"] for c in reader.meta["cameras"]]
            name = camera or (cameras[0] if cameras else "")
            if name not in cameras:
                raise ReviewNotFound(f"no camera {name!r} in the store; cameras: {cameras}")
            if not 0 <= step < info.length:
                raise ReviewNotFound(f"no step {step} in episode {episode_id!r}: it has {info.length} committed steps")
            image = reader.read(episode_id, keys=[f"obs/{name}"], start=step, stop=step + 1)[f"obs/{name}"][0]
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        return buf.tobytes()


@contextlib.contextmanager
def _missing_is_not_found(episode_id: str) -> Iterator[None]:
    """The reader's KeyError (no such episode, or discarded while being read) as a 404."""
    try:
        yield
    except KeyError:
        raise ReviewNotFound(f"no episode {episode_id!r}") from None
