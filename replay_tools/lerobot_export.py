"""`replay export --format lerobot`: a store's demos and practice as a LeRobotDataset (codebase v3.0).

Layout (what lerobot's `LeRobotDataset(repo_id, root=DIR)` reads, written here with pyarrow):

    meta/info.json                          codebase_version "v3.0", fps, features, path templates
    meta/stats.json                         min/max/mean/std/count/q01..q99 of every numeric feature
    meta/tasks.parquet                      task strings (the index) -> task_index
    meta/episodes/chunk-000/file-000.parquet  one row per episode: frame range, data file, our columns
    data/chunk-CCC/file-FFF.parquet         one row per frame; episodes whole, a new file past 100 MB

Camera views are `dtype: image` features: PNG bytes inside the data parquet, not mp4 video. PNG is
lossless (an export is the store's frames, bit for bit) and decodes with PIL alone, whereas lerobot's
video path needs torchcodec or PyAV builds matching its torch, and AV1/H.264 would alter the pixels.

Features per frame: observation.images.<camera> (every stored view), observation.state (obs/proprio),
observation.environment_state (obs/state, sim stores only), action (the executed action), and
  next.reward     the store records no reward: 1.0 on the last frame of a successful episode, else 0.0
  next.success    True on the last frame of a successful episode
  next.done       True on every episode's last frame
  intervention    a person drove this step (teleop)
  policy_version  the learned policy that acted (-1: none, e.g. a demo)
Episode success is the operator's verdict (replay/labels.py) where one was given, else the recorded
one; None (unknown, e.g. a crashed writer) exports as no success. The task string is the direction
("push the cube forward" / "... backward"); meta/episodes adds store_episode, kind, direction,
success, success_source, end_reason and session per episode. `timestamp` is frame_index / fps, as
lerobot expects; the store's host times are not exported.

Only closed episodes are exported (the one the daemon is writing is skipped), read up to their
committed length, so a store being written is safe to export.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from replay.labels import LabelSet
from replay.store import EpisodeInfo, ReplayReader, StoreError
from spec.step import proprio_layout

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000  # files per chunk directory, as lerobot
DATA_FILE_MB = 100  # start a new data file once one holds this much, as lerobot
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
EPISODES_PATH = "meta/episodes/chunk-000/file-000.parquet"
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
DEFAULT_KINDS = ("demo", "practice")
READ_STEPS = 128  # steps read from the store at a time: bounds memory for long episodes
_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # the `datasets` Image storage
_ARROW = {"float32": pa.float32(), "int64": pa.int64(), "bool": pa.bool_()}
_EPISODE_TYPES = {"success": pa.bool_(), "success_source": pa.string(), "end_reason": pa.string(),
                  "session": pa.string()}


class ExportError(RuntimeError):
    """The export cannot be made (missing store, bad selection, unreadable chunk, output in the way);
    `param` names the command-line argument at fault."""

    def __init__(self, message: str, param: str = "STORE") -> None:
        super().__init__(message)
        self.param = param


@dataclass
class ExportSummary:
    out: Path
    episodes: list[dict[str, Any]]  # one row per exported episode (meta/episodes without stats)
    frames: int
    cameras: list[str]
    skipped_open: list[str] = field(default_factory=list)


def export_lerobot(
    store: Path,
    out: Path,
    kinds: Sequence[str] = DEFAULT_KINDS,
    episodes: Sequence[str] | None = None,
    task: str = "push the cube",
    force: bool = False,
    data_file_mb: float = DATA_FILE_MB,
) -> ExportSummary:
    """Write the selected episodes of `store` to `out` as a LeRobotDataset; see the module doc.
    `data_file_mb`: start a new data file past this size (lerobot's default; smaller in tests)."""
    reader = _open(store)
    selected, skipped_open = _select(reader, store, kinds, episodes)
    _check_out(out, store, force)
    meta = reader.meta
    fps = float(meta["rate_hz"])
    if not fps.is_integer():
        raise ExportError(f"the store's control rate {fps} Hz is not a whole number: LeRobotDataset needs an int fps")
    features = _features(meta)
    verdicts = LabelSet.from_events(reader.events()).episode_verdicts

    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        rows, stats, tasks = _write_data(reader, partial, selected, features, verdicts, int(fps), task, data_file_mb)
        _write_meta(partial, meta, int(fps), features, rows, stats, tasks)
        _publish(partial, out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    cams = [c["name"] for c in meta["cameras"]]
    summary_rows = [{k: v for k, v in r.items() if not k.startswith("stats/")} for r in rows]
    return ExportSummary(out, summary_rows, sum(r["length"] for r in rows), cams, skipped_open)


# -- selection ---------------------------------------------------------------------------------


def _open(store: Path) -> ReplayReader:
    if not (store / "zarr.json").is_file():
        raise ExportError(f"no replay store at {store}")
    try:
        return ReplayReader(store)
    except (StoreError, OSError, ValueError) as exc:
        raise ExportError(f"cannot read the store {store}: {exc}") from None


def _select(
    reader: ReplayReader, store: Path, kinds: Sequence[str], wanted: Sequence[str] | None
) -> tuple[list[EpisodeInfo], list[str]]:
    """(episodes to export, open ones skipped). The writer deletes an episode closed without steps."""
    every = {e.id: e for e in reader.episodes(include_open=True)}
    if wanted is not None:
        ids = sorted(dict.fromkeys(_episode_id(w) for w in wanted), key=int)
        if not ids:
            raise ExportError("--episodes names no episode", "--episodes")
        unknown = [i for i in ids if i not in every]
        if unknown:
            known = f"episodes {min(every, key=int)}..{max(every, key=int)}" if every else "the store is empty"
            raise ExportError(f"no episode {', '.join(unknown)} in {store} ({known})", "--episodes")
        for i in ids:
            e = every[i]
            if e.kind not in kinds:
                article = "an" if e.kind == "eval" else "a"
                raise ExportError(f"episode {i} is {article} {e.kind} episode: add {e.kind} to --kinds to export it",
                                  "--episodes")
            if not e.closed:
                raise ExportError(f"episode {i} is still being written; export it once it is closed", "--episodes")
        candidates = [every[i] for i in ids]
    else:
        candidates = [e for e in every.values() if e.kind in kinds]
    chosen = [e for e in candidates if e.closed]
    skipped_open = [e.id for e in candidates if not e.closed]
    if not chosen:  # only without --episodes: every episode it names was checked above
        raise ExportError(f"nothing to export: no closed {'/'.join(kinds)} episodes in {store}")
    return chosen, skipped_open


def _episode_id(text: str) -> str:
    text = text.strip()
    if not text.isdigit():
        raise ExportError(f"{text!r} is not an episode id (digits, e.g. 000004 or 4)", "--episodes")
    return f"{int(text):06d}"


def _check_out(out: Path, store: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a directory", "--out")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ExportError(f"{out} is not empty; choose another directory or pass --force to replace it", "--out")
    here, src = out.resolve(), store.resolve()
    if here == src or here in src.parents or src in here.parents:
        raise ExportError(f"{out} overlaps the store {store}; export somewhere else", "--out")


def _publish(partial: Path, out: Path) -> None:
    """Move the finished export into place; a failed export leaves `out` as it was."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        out.rename(old)
    partial.rename(out)
    shutil.rmtree(old, ignore_errors=True)


# -- features ----------------------------------------------------------------------------------


def _features(meta: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """meta/info.json's `features`, in column order. Names where the store's layout is known."""
    feats: dict[str, dict[str, Any]] = {}
    for cam in meta["cameras"]:
        feats[f"observation.images.{cam['name']}"] = {
            "dtype": "image", "shape": [int(cam["height"]), int(cam["width"]), 3],
            "names": ["height", "width", "channels"]}
    space = meta["action_space"]
    proprio = proprio_layout(bool(space["yaw"])) if "yaw" in space else None
    feats["observation.state"] = _vector(int(meta["proprio_dim"]), proprio)
    if meta.get("state_dim"):
        from sim.task import STATE_LAYOUT  # the sim's state vector is what stores record as obs/state

        feats["observation.environment_state"] = _vector(int(meta["state_dim"]), list(STATE_LAYOUT))
    feats["action"] = _vector(int(space["dim"]), space.get("layout"))
    feats["next.reward"] = _scalar("float32")
    feats["next.success"] = _scalar("bool")
    feats["next.done"] = _scalar("bool")
    feats["intervention"] = _scalar("bool")
    feats["policy_version"] = _scalar("int64")
    feats["timestamp"] = _scalar("float32")
    for key in ("frame_index", "episode_index", "index", "task_index"):
        feats[key] = _scalar("int64")
    return feats


def _vector(dim: int, names: list[str] | None) -> dict[str, Any]:
    return {"dtype": "float32", "shape": [dim], "names": names if names and len(names) == dim else None}


def _scalar(dtype: str) -> dict[str, Any]:
    return {"dtype": dtype, "shape": [1], "names": None}


def _schema(features: dict[str, dict[str, Any]]) -> pa.Schema:
    """The Arrow types `datasets` gives these features (Image, fixed-size List, Value)."""
    fields = []
    for key, ft in features.items():
        if ft["dtype"] == "image":
            fields.append(pa.field(key, _IMAGE))
        elif ft["shape"] == [1]:
            fields.append(pa.field(key, _ARROW[ft["dtype"]]))
        else:
            fields.append(pa.field(key, pa.list_(_ARROW[ft["dtype"]], ft["shape"][0])))
    return pa.schema(fields)


# -- data --------------------------------------------------------------------------------------


def _success(info: EpisodeInfo, verdicts: dict[str, str]) -> tuple[bool | None, str | None]:
    if info.id in verdicts:
        return verdicts[info.id] == "success", "operator"
    return (None, None) if info.success is None else (bool(info.success), "recorded")


def _read(reader: ReplayReader, ep: str, keys: list[str], start: int, stop: int) -> dict[str, np.ndarray]:
    try:
        return reader.read(ep, keys=keys, start=start, stop=stop)
    except KeyError as exc:  # discarded while we read
        raise ExportError(str(exc.args[0])) from None
    except (RuntimeError, ValueError, OSError, IndexError) as exc:  # how zarr's codecs report a bad chunk
        raise ExportError(f"episode {ep}: cannot read steps {start}..{stop} (corrupt chunk?): {exc}") from None


def _png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))  # OpenCV writes BGR
    if not ok:
        raise ExportError("PNG encoding failed")
    return buf.tobytes()


class _Stats:
    """Per-feature statistics as lerobot's compute_stats lays them out; images from exact histograms."""

    def __init__(self, features: dict[str, dict[str, Any]]) -> None:
        self.image_keys = [k for k, ft in features.items() if ft["dtype"] == "image"]
        self.numeric_keys = [k for k in features if k not in self.image_keys]
        self.hist = {k: np.zeros((3, 256), np.int64) for k in self.image_keys}
        self.values: dict[str, list[np.ndarray]] = {k: [] for k in self.numeric_keys}
        self.frames = 0

    def add(self, columns: dict[str, np.ndarray]) -> None:
        for k in self.image_keys:
            imgs = columns[k]
            for c in range(3):
                self.hist[k][c] += np.bincount(imgs[..., c].ravel(), minlength=256)
        for k in self.numeric_keys:
            v = columns[k]
            self.values[k].append(v.reshape(len(v), -1).astype(np.float64))
        self.frames += len(columns[self.numeric_keys[0]])

    def result(self) -> dict[str, dict[str, np.ndarray]]:
        out = {k: _hist_stats(h, self.frames) for k, h in self.hist.items()}
        for k, parts in self.values.items():
            x = np.concatenate(parts)
            out[k] = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0),
                      "count": np.array([len(x)])}
            out[k] |= {_qname(q): np.quantile(x, q, axis=0) for q in QUANTILES}
        return out


def _qname(q: float) -> str:
    return f"q{round(q * 100):02d}"


def _hist_stats(hist: np.ndarray, frames: int) -> dict[str, np.ndarray]:
    """Per-channel stats of pixel values scaled to [0, 1], shaped (3, 1, 1) as lerobot's."""
    v = np.arange(256) / 255.0
    n = hist.sum(1)
    mean = (hist * v).sum(1) / n
    std = np.sqrt((hist * (v[None] - mean[:, None]) ** 2).sum(1) / n)
    cdf = hist.cumsum(1)
    stats = {"min": v[np.argmax(hist > 0, axis=1)], "max": v[255 - np.argmax(hist[:, ::-1] > 0, axis=1)],
             "mean": mean, "std": std}
    stats |= {_qname(q): v[np.argmax(cdf >= q * n[:, None], axis=1)] for q in QUANTILES}
    out = {k: s.reshape(3, 1, 1) for k, s in stats.items()}
    out["count"] = np.array([frames])
    return out


class _DataFiles:
    """data/chunk-CCC/file-FFF.parquet, as lerobot lays them out: an episode stays whole in one file,
    and the next episode starts a new file once the current one holds `limit_mb`."""

    def __init__(self, root: Path, schema: pa.Schema, limit_mb: float) -> None:
        self.root, self.schema, self.limit = root, schema, limit_mb * 2**20
        self.chunk = self.file = 0
        self.bytes = 0
        self.writer: pq.ParquetWriter | None = None

    def start_episode(self) -> tuple[int, int]:
        """(chunk, file) the next episode goes to."""
        if self.writer is not None and self.bytes >= self.limit:
            self.close()
            self.chunk, self.file = (self.chunk + 1, 0) if self.file == CHUNKS_SIZE - 1 else (self.chunk, self.file + 1)
            self.bytes = 0
        return self.chunk, self.file

    def write(self, table: pa.Table, nbytes: int) -> None:
        if self.writer is None:
            path = self.root / DATA_PATH.format(chunk_index=self.chunk, file_index=self.file)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(path, self.schema, compression="snappy")
        self.writer.write_table(table)
        self.bytes += nbytes

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _write_data(
    reader: ReplayReader,
    root: Path,
    selected: list[EpisodeInfo],
    features: dict[str, dict[str, Any]],
    verdicts: dict[str, str],
    fps: int,
    task: str,
    data_file_mb: float,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, np.ndarray]], list[str]]:
    """Write data/ and return (meta/episodes rows, dataset stats, tasks in index order)."""
    schema = _schema(features)
    cams = [k for k, ft in features.items() if ft["dtype"] == "image"]
    store_keys = [_store_key(k) for k in cams] + ["obs/proprio", "action", "policy_version", "intervention"]
    if "observation.environment_state" in features:
        store_keys.append("obs/state")
    tasks: list[str] = []
    rows: list[dict[str, Any]] = []
    total = _Stats(features)
    files = _DataFiles(root, schema, data_file_mb)
    try:
        for ep_index, info in enumerate(selected):
            chunk, file = files.start_episode()
            text = f"{task} {info.direction}"
            if text not in tasks:
                tasks.append(text)
            success, source = _success(info, verdicts)
            first = sum(r["length"] for r in rows)
            ep_stats = _Stats(features)
            for start in range(0, info.length, READ_STEPS):
                stop = min(start + READ_STEPS, info.length)
                data = _read(reader, info.id, store_keys, start, stop)
                cols = _frame_columns(data, cams, features, info, success, start, stop, fps,
                                      ep_index, first, tasks.index(text))
                ep_stats.add(cols)
                total.add(cols)
                files.write(*_table(cols, schema, cams))
            rows.append({
                "episode_index": ep_index, "tasks": [text], "length": info.length,
                "data/chunk_index": chunk, "data/file_index": file,
                "dataset_from_index": first, "dataset_to_index": first + info.length,
                "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
                "store_episode": info.id, "kind": info.kind, "direction": info.direction,
                "success": success, "success_source": source,
                "end_reason": _text(info.attrs.get("end_reason")), "session": _text(info.attrs.get("session")),
                **{f"stats/{k}/{s}": v.tolist() for k, st in ep_stats.result().items() for s, v in st.items()},
            })
    finally:
        files.close()
    return rows, total.result(), tasks


def _store_key(image_feature: str) -> str:
    return f"obs/{image_feature.removeprefix('observation.images.')}"


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _frame_columns(
    data: dict[str, np.ndarray], cams: list[str], features: dict[str, dict[str, Any]], info: EpisodeInfo,
    success: bool | None, start: int, stop: int, fps: int, ep_index: int, first: int, task_index: int,
) -> dict[str, np.ndarray]:
    """Steps [start, stop) of one episode, keyed by feature."""
    frame = np.arange(start, stop)
    last = frame == info.length - 1
    cols: dict[str, np.ndarray] = {k: data[_store_key(k)] for k in cams}
    cols["observation.state"] = data["obs/proprio"].astype(np.float32)
    if "observation.environment_state" in features:
        cols["observation.environment_state"] = data["obs/state"].astype(np.float32)
    cols["action"] = data["action"].astype(np.float32)
    cols["next.success"] = last & bool(success)
    cols["next.reward"] = cols["next.success"].astype(np.float32)
    cols["next.done"] = last
    cols["intervention"] = data["intervention"].astype(bool)
    cols["policy_version"] = data["policy_version"].astype(np.int64)
    cols["timestamp"] = (frame / fps).astype(np.float32)
    cols["frame_index"] = frame.astype(np.int64)
    cols["episode_index"] = np.full(len(frame), ep_index, np.int64)
    cols["index"] = (first + frame).astype(np.int64)
    cols["task_index"] = np.full(len(frame), task_index, np.int64)
    return cols


def _table(cols: dict[str, np.ndarray], schema: pa.Schema, cams: list[str]) -> tuple[pa.Table, int]:
    arrays = []
    nbytes = 0
    for f in schema:
        v = cols[f.name]
        if f.name in cams:
            pngs = [_png(img) for img in v]
            nbytes += sum(len(p) for p in pngs)
            arrays.append(pa.array([{"bytes": p, "path": None} for p in pngs], type=_IMAGE))
        elif pa.types.is_fixed_size_list(f.type):
            arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(v.ravel(), f.type.value_type), v.shape[1]))
            nbytes += v.nbytes
        else:
            arrays.append(pa.array(v, f.type))
            nbytes += v.nbytes
    return pa.Table.from_arrays(arrays, schema=schema), nbytes


# -- metadata ----------------------------------------------------------------------------------


def _write_meta(
    root: Path,
    meta: dict[str, Any],
    fps: int,
    features: dict[str, dict[str, Any]],
    rows: list[dict[str, Any]],
    stats: dict[str, dict[str, np.ndarray]],
    tasks: list[str],
) -> None:
    (root / "meta").mkdir(parents=True, exist_ok=True)
    frames = sum(r["length"] for r in rows)
    info = {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": meta["robot"],
        "total_episodes": len(rows),
        "total_frames": frames,
        "total_tasks": len(tasks),
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": DATA_FILE_MB,  # lerobot's own limit for datasets it extends
        "video_files_size_in_mb": 200,  # lerobot's default; no videos are written
        "fps": fps,
        "splits": {"train": f"0:{len(rows)}"},
        "data_path": DATA_PATH,
        "video_path": None,
        "features": features,
    }
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    serial = {k: {s: v.tolist() for s, v in st.items()} for k, st in stats.items()}
    (root / "meta" / "stats.json").write_text(json.dumps(serial, indent=4))
    # lerobot reads the task strings back as the DataFrame's index, so pandas writes this one.
    pd.DataFrame({"task_index": range(len(tasks))}, index=tasks).to_parquet(root / "meta" / "tasks.parquet")
    episodes = root / EPISODES_PATH
    episodes.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows)
    for name, typ in _EPISODE_TYPES.items():  # typed even where every episode has None
        table = table.set_column(table.schema.get_field_index(name), name, table[name].cast(typ))
    pq.write_table(table, episodes, compression="snappy")
