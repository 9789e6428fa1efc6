"""Replay store: round trip, validation, episode lifecycle, the writer lock, metadata checks, and a
reader in another process while the writer appends.

Run as a script, this file is the child process of the multi-process tests (see `_child`).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from store_patterns import pattern_meta, pattern_mismatches, pattern_step

from replay.chunks import ChunkedArray
from replay.store import EpisodeInfo, ReplayReader, ReplayWriter, StoreError, StoreLockedError, StoreMeta
from spec.files import atomic_write_bytes

HERE = Path(__file__).resolve()
CHILD_TIMEOUT_S = 30


def small_meta(**kw) -> StoreMeta:
    kw.setdefault("cameras", (("front", 12, 16), ("wrist", 8, 10)))
    return pattern_meta(**kw)


def write_pattern(ep, meta: dict, n: int, flush_every: int = 0) -> None:
    seed = int(ep.id)
    for t in range(ep.length, ep.length + n):
        ep.append(pattern_step(meta, seed, t))
        if flush_every and (t + 1) % flush_every == 0:
            ep.flush()


def spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(HERE), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=HERE.parents[1],
    )


def read_line(proc: subprocess.Popen, timeout: float = CHILD_TIMEOUT_S) -> str:
    """The child's next stdout line, or fail (never hang) if it does not come in time."""
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            raise AssertionError(f"child printed nothing for {timeout} s")
    finally:
        sel.close()
    line = proc.stdout.readline()
    if not line:
        raise AssertionError(f"child exited early (rc={proc.wait(5)}): {proc.stderr.read()[-2000:]}")
    return line.strip()


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


# -- round trip and validation ------------------------------------------------------------------


def test_round_trip_every_key_dtype_and_shape(tmp_path: Path) -> None:
    meta = small_meta(state_dim=3, proprio_dim=5, action_dim=4)
    with ReplayWriter.open(tmp_path / "s.zarr", meta, chunk_steps=4) as w:
        ep = w.begin_episode("demo", "backward", {"session": "s1", "phase": 2})
        write_pattern(ep, w.meta, 6)
        ep.add_event({"type": "intervention", "reason": "cube fell"})
        ep.flush()  # partial chunk: steps 4..5 of chunk 1
        write_pattern(ep, w.meta, 5)  # rewrites chunk 1 whole, then a partial chunk 2
        ep.update_attrs(phase=3)
        info = ep.close(success=True, end_reason="done")
        assert w.current is None

    assert info.length == 11 and info.closed and info.success is True
    r = ReplayReader(tmp_path / "s.zarr")
    assert r.meta["state_dim"] == 3 and [c["name"] for c in r.meta["cameras"]] == ["front", "wrist"]
    [got] = r.episodes()
    assert isinstance(got, EpisodeInfo)
    assert (got.id, got.kind, got.direction, got.length, got.closed, got.success) == (
        info.id, "demo", "backward", 11, True, True,
    )
    assert got.started_at <= got.ended_at <= time.time()
    assert got.attrs["session"] == "s1" and got.attrs["phase"] == 3 and got.attrs["end_reason"] == "done"
    assert got.attrs["events"][0]["reason"] == "cube fell" and got.attrs["events"][0]["step"] == 6
    seed = int(info.id)
    assert got.attrs["policy_versions"] == sorted({(t + seed) % 5 - 1 for t in range(11)})

    data = r.read(info.id)
    expected_shapes = {
        "obs/front": ((11, 12, 16, 3), np.uint8),
        "obs/wrist": ((11, 8, 10, 3), np.uint8),
        "obs/proprio": ((11, 5), np.float32),
        "obs/state": ((11, 3), np.float32),
        "action": ((11, 4), np.float32),
        "timestamp": ((11,), np.float64),
        "policy_version": ((11,), np.int32),
        "intervention": ((11,), np.bool_),
    }
    assert {k: (v.shape, v.dtype) for k, v in data.items()} == expected_shapes
    assert pattern_mismatches(r.meta, seed, data) == []
    part = r.read(info.id, keys=["action", "obs/front"], start=3, stop=9)
    assert list(part) == ["action", "obs/front"] and len(part["action"]) == 6
    assert pattern_mismatches(r.meta, seed, part, start=3) == []
    assert len(r.read(info.id, stop=1000)["timestamp"]) == 11  # clipped to what is committed
    steps = r.read_steps(info.id, [9, 0, 9], keys=["timestamp"])["timestamp"]
    assert steps.tolist() == [data["timestamp"][9], data["timestamp"][0], data["timestamp"][9]]
    # Plain zarr sees the documented layout too.
    g = zarr.open_group(tmp_path / "s.zarr", mode="r")
    assert g[f"episodes/{info.id}/obs/front"].shape == (11, 12, 16, 3)
    assert g[f"episodes/{info.id}"].attrs["closed"] is True


def test_reads_skip_zarrs_event_loop_for_the_writers_layout_and_agree_with_zarr(tmp_path: Path) -> None:
    # A restarted learner re-reads thousands of arrays; read() decodes our chunks itself
    # (replay.chunks). It must give what zarr gives, for every key and range.
    meta = small_meta(state_dim=3)
    with ReplayWriter.open(tmp_path / "s.zarr", meta, chunk_steps=4) as w:
        ep = w.begin_episode("practice", "forward")
        write_pattern(ep, w.meta, 10, flush_every=3)
        ep_id = ep.close().id
    r = ReplayReader(tmp_path / "s.zarr")
    ep_dir = tmp_path / "s.zarr" / "episodes" / ep_id
    g = zarr.open_group(tmp_path / "s.zarr", mode="r")
    for key in r.keys:
        assert ChunkedArray.open(ep_dir / key) is not None, key
        for start, stop in ((0, 10), (3, 9), (4, 8), (9, 10)):
            got = r.read(ep_id, [key], start, stop)[key]
            want = g[f"episodes/{ep_id}/{key}"][start:stop]
            assert got.dtype == want.dtype and np.array_equal(got, want), (key, start, stop)
    # Another layout (no compressor here) is read through zarr.
    other = zarr.create_array(tmp_path / "other.zarr", shape=(5, 2), chunks=(2, 2), dtype="f4", compressors=None,
                              filters=[zarr.codecs.TransposeCodec(order=(1, 0))])
    assert ChunkedArray.open(tmp_path / "other.zarr") is None
    del other
    # A damaged chunk is an error that names it, never garbage.
    chunk = ep_dir / "obs" / "front" / "c" / "0" / "0" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:20])
    with pytest.raises(StoreError, match="corrupt"):
        ReplayReader(tmp_path / "s.zarr").read(ep_id, ["obs/front"])


BAD_STEPS = [
    ("missing", lambda s: s.pop("action"), "missing ['action']"),
    ("unknown", lambda s: s.update(reward=1.0), "unknown ['reward']"),
    ("image dtype", lambda s: s.update({"obs/front": s["obs/front"].astype(np.float32)}), "obs/front"),
    ("image shape", lambda s: s.update({"obs/wrist": np.zeros((10, 8, 3), np.uint8)}), "obs/wrist"),
    ("image list", lambda s: s.update({"obs/front": s["obs/front"].tolist()}), "obs/front"),
    ("proprio shape", lambda s: s.update({"obs/proprio": np.zeros(5)}), "obs/proprio"),
    ("action nan", lambda s: s.update(action=np.array([0, np.nan, 0, 0])), "NaN"),
    ("action strings", lambda s: s.update(action=np.array(["a"] * 4)), "action"),
    ("timestamp back", lambda s: s.update(timestamp=-1.0), "earlier than the previous"),
    ("timestamp str", lambda s: s.update(timestamp="now"), "timestamp"),
    ("version float", lambda s: s.update(policy_version=1.5), "policy_version"),
    ("version < -1", lambda s: s.update(policy_version=-2), "policy_version"),
    ("intervention int", lambda s: s.update(intervention=1), "intervention"),
]


@pytest.fixture(scope="module")
def shared_writer(tmp_path_factory):
    with ReplayWriter.open(tmp_path_factory.mktemp("validation") / "s.zarr", small_meta(), chunk_steps=2) as w:
        yield w


@pytest.mark.parametrize("name,mutate,message", BAD_STEPS, ids=[b[0] for b in BAD_STEPS])
def test_bad_steps_are_refused_with_a_clear_error(shared_writer, name, mutate, message) -> None:
    w = shared_writer
    ep = w.begin_episode("practice", "forward")
    try:
        write_pattern(ep, w.meta, 3)
        step = pattern_step(w.meta, int(ep.id), 3)
        mutate(step)
        with pytest.raises(ValueError, match=re.escape(message)):
            ep.append(step)
        assert ep.length == 3  # nothing of the bad step was taken
        write_pattern(ep, w.meta, 2)
        ep.flush()
        r = ReplayReader(w.path)
        assert pattern_mismatches(r.meta, int(ep.id), r.read(ep.id)) == [] and r.episode(ep.id).length == 5
    finally:
        ep.discard()


def test_bad_episode_arguments(tmp_path: Path) -> None:
    with ReplayWriter.open(tmp_path / "s.zarr", small_meta()) as w:
        with pytest.raises(ValueError, match="kind"):
            w.begin_episode("training", "forward")
        with pytest.raises(ValueError, match="direction"):
            w.begin_episode("demo", "sideways")
        with pytest.raises(ValueError, match="length"):
            w.begin_episode("demo", "forward", {"length": 3})
        with pytest.raises(ValueError, match="JSON"):
            w.begin_episode("demo", "forward", {"when": object()})
        ep = w.begin_episode("demo", "forward")
        with pytest.raises(StoreError, match="still open"):
            w.begin_episode("demo", "forward")
        with pytest.raises(ValueError, match="closed"):
            ep.update_attrs(closed=True)
        with pytest.raises(ValueError, match="success"):
            ep.close(success="yes")


def test_empty_episode_is_deleted_and_ids_are_never_reused(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    with ReplayWriter.open(path, small_meta()) as w:
        a = w.begin_episode("practice", "forward")
        write_pattern(a, w.meta, 3)
        a.close()
        empty = w.begin_episode("practice", "backward")
        info = empty.close()
        assert info.length == 0 and info.attrs["deleted"] is True
        assert not (path / "episodes" / empty.id).exists()
        with pytest.raises(StoreError, match="deleted"):
            empty.append(pattern_step(w.meta, 0, 0))
    with ReplayWriter.open(path, small_meta()) as w:
        b = w.begin_episode("practice", "forward")
        assert int(b.id) > int(empty.id) > int(a.id)
        write_pattern(b, w.meta, 1)
    assert [e.id for e in ReplayReader(path).episodes()] == [a.id, b.id]


def test_discard_open_and_closed_episodes(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    with ReplayWriter.open(path, small_meta(), chunk_steps=2) as w:
        keep = w.begin_episode("demo", "forward")
        write_pattern(keep, w.meta, 4)
        keep.close(success=True)
        bad = w.begin_episode("demo", "forward")
        write_pattern(bad, w.meta, 5)
        bad.flush()
        r = ReplayReader(path)
        assert [e.id for e in r.episodes(include_open=True)] == [keep.id, bad.id]
        bad.discard()
        assert w.current is None
        assert [e.id for e in r.episodes(include_open=True)] == [keep.id]
        with pytest.raises(KeyError, match=bad.id):
            r.read(bad.id)
        later = w.begin_episode("demo", "backward")  # discarding freed the slot
        write_pattern(later, w.meta, 2)
        later.close()
        assert len(r.read(keep.id)["timestamp"]) == 4  # the reader now caches keep's arrays
        keep.discard()  # the operator may also throw away a finished demonstration
        with pytest.raises(KeyError, match="deleted"):
            r.read(keep.id)  # not zeros from chunks that are gone
        with pytest.raises(StoreError, match="already deleted"):
            keep.discard()
    assert [e.id for e in ReplayReader(path).episodes()] == [later.id]
    assert not [p for p in (path / "episodes").iterdir() if p.name.startswith(".")]


def test_close_keeps_the_open_episode(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    with ReplayWriter.open(path, small_meta(), chunk_steps=4) as w:
        ep = w.begin_episode("eval", "forward")
        write_pattern(ep, w.meta, 6)
    with pytest.raises(StoreError, match="closed"):
        w.begin_episode("eval", "forward")
    r = ReplayReader(path)
    [info] = r.episodes()
    assert info.length == 6 and info.attrs["end_reason"] == "writer_closed" and info.success is None
    assert pattern_mismatches(r.meta, int(info.id), r.read(info.id)) == []


def test_a_failed_write_loses_nothing_and_the_step_can_be_retried(tmp_path: Path, monkeypatch) -> None:
    import replay.writer

    real_sync = replay.writer.zarr_sync
    failures = iter([True])

    def disk_full_once(coro):
        if next(failures, False):
            coro.close()
            raise OSError(28, "No space left on device")
        return real_sync(coro)

    with ReplayWriter.open(tmp_path / "s.zarr", small_meta(), chunk_steps=4) as w:
        ep = w.begin_episode("practice", "forward")
        monkeypatch.setattr(replay.writer, "zarr_sync", disk_full_once)  # the disk fills up after the episode began
        write_pattern(ep, w.meta, 4)  # fills the buffer; the 5th append writes it
        step = pattern_step(w.meta, int(ep.id), 4)
        with pytest.raises(StoreError, match="No space left"):
            ep.append(step)
        assert ep.length == 4 and ep.committed == 0
        ep.append(step)  # the same step again: the write is retried first
        write_pattern(ep, w.meta, 3)
        info = ep.close()
    r = ReplayReader(tmp_path / "s.zarr")
    assert info.length == 8 and pattern_mismatches(r.meta, int(info.id), r.read(info.id)) == []


def test_atomic_write_keeps_the_old_file_when_interrupted(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "zarr.json"
    target.write_text('{"old": true}')

    def boom(*_a):
        raise OSError("killed mid-write")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b'{"new": tr')
    assert json.loads(target.read_text()) == {"old": True}
    assert list(tmp_path.iterdir()) == [target]


# -- metadata -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(cameras=(("front", 12, 16), ("wrist", 9, 10))), "camera 'wrist' stored size"),
        (dict(cameras=(("front", 12, 16),)), "cameras: store has"),
        (dict(action_dim=5), "action_space.dim"),
        (dict(proprio_dim=7), "proprio_dim"),
        (dict(state_dim=2), "state_dim"),
        (dict(robot="other"), "robot"),
    ],
)
def test_incompatible_meta_is_refused(tmp_path: Path, change, message) -> None:
    path = tmp_path / "s.zarr"
    with ReplayWriter.open(path, small_meta()) as w:
        write_pattern(w.begin_episode("demo", "forward"), w.meta, 2)
    before = ReplayReader(path).meta
    with pytest.raises(StoreError, match=message):
        ReplayWriter.open(path, small_meta(**change))
    assert ReplayReader(path).meta == before
    ReplayWriter.open(path, small_meta()).close()  # the refused attempt released the lock


def test_compatible_meta_change_is_recorded(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    meta = small_meta()
    with ReplayWriter.open(path, meta) as w:
        write_pattern(w.begin_episode("demo", "forward"), w.meta, 2)
    moved = StoreMeta(**{**meta.__dict__, "cameras": [dict(meta.cameras[0], crop=[10, 0, 300, 200]), meta.cameras[1]]})
    with ReplayWriter.open(path, moved) as w:
        write_pattern(w.begin_episode("demo", "forward"), w.meta, 2)
    r = ReplayReader(path)
    assert r.meta["meta_revision"] == 1
    [entry] = r.meta["meta_history"]
    assert entry["changes"] == {"cameras.front.crop": {"old": None, "new": [10, 0, 300, 200]}}
    assert [e.attrs["meta_revision"] for e in r.episodes()] == [0, 1]
    assert r.meta["cameras"][0]["crop"] == [10, 0, 300, 200]


def test_store_meta_validation() -> None:
    with pytest.raises(ValueError, match="height"):
        StoreMeta("r", 10, [{"name": "front", "height": 0, "width": 4}], {"dim": 4}, 4)
    with pytest.raises(ValueError, match="twice"):
        StoreMeta("r", 10, [{"name": "a", "height": 1, "width": 1}] * 2, {"dim": 4}, 4)
    with pytest.raises(ValueError, match="dim"):
        StoreMeta("r", 10, [], {"layout": []}, 4)
    with pytest.raises(ValueError, match="rate_hz"):
        StoreMeta("r", 0, [], {"dim": 4}, 4)


def test_a_directory_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="not a replay store"):
        ReplayWriter.open(tmp_path, small_meta())
    with pytest.raises(StoreError, match="not a replay store"):
        ReplayReader(tmp_path)
    with pytest.raises(StoreError, match="not a replay store"):
        ReplayReader(tmp_path / "not-created-yet.zarr")
    assert (tmp_path / "notes.txt").read_text() == "mine"


# -- processes ----------------------------------------------------------------------------------


def test_second_writer_in_another_process_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    holder = spawn("hold-lock", str(path))
    try:
        assert read_line(holder) == "LOCKED"
        with pytest.raises(StoreLockedError, match=f"pid {holder.pid}") as e:
            ReplayWriter.open(path, small_meta())
        assert e.value.pid == holder.pid
        # The kernel drops the lock when its holder dies, however it dies.
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        ReplayWriter.open(path, small_meta()).close()
    finally:
        stop(holder)


def test_a_forked_child_does_not_keep_the_store_locked(tmp_path: Path) -> None:
    """The writer process dies by kill -9 while a child it forked lives on."""
    path = tmp_path / "s.zarr"
    writer = spawn("fork-and-hold", str(path))
    grandchild = None
    try:
        grandchild = int(read_line(writer))
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
        ReplayWriter.open(path, small_meta()).close()  # StoreLockedError if the fork kept the lock
    finally:
        stop(writer)
        if grandchild is not None:
            os.kill(grandchild, signal.SIGKILL)


def test_killed_writer_state_is_repaired(tmp_path: Path) -> None:
    """A writer that died after writing data but before committing it, with temp files lying around."""
    path = tmp_path / "s.zarr"
    child = spawn("leave-crash-state", str(path))
    try:
        assert read_line(child) == "CRASHED"
        child.wait(CHILD_TIMEOUT_S)
    finally:
        stop(child)
    r = ReplayReader(path)
    closed_id, open_id = [e.id for e in r.episodes(include_open=True)]
    closed_before = r.episodes()
    assert r.episode(open_id).length == 8 and not r.episode(open_id).closed
    # Readers trust only the marker: the garbage beyond it is invisible even before repair.
    assert len(r.read(open_id)["timestamp"]) == 8

    with ReplayWriter.open(path, small_meta(), chunk_steps=4) as w:
        assert any(f"closed episode {open_id}" in note for note in w.repairs)
        ep = w.begin_episode("practice", "forward")
        write_pattern(ep, w.meta, 5)
        new_id = ep.close().id
    r = ReplayReader(path)
    assert r.episodes()[0] == closed_before[0]  # untouched
    repaired = r.episode(open_id)
    assert repaired.closed and repaired.length == 8 and repaired.attrs["end_reason"] == "writer_crashed"
    for info in r.episodes():
        assert pattern_mismatches(r.meta, int(info.id), r.read(info.id)) == [], info.id
    g = zarr.open_group(path, mode="r")
    assert g[f"episodes/{open_id}/obs/front"].shape[0] == 8  # arrays shrunk back to the commit marker
    assert not list(path.rglob("*.partial"))
    assert [e.id for e in r.episodes()] == [closed_id, open_id, new_id]


# -- the store's event log -----------------------------------------------------------------------


def test_event_log_is_numbered_durable_and_survives_reopening(tmp_path: Path, monkeypatch) -> None:
    import replay.event_log

    monkeypatch.setattr(replay.event_log, "EVENTS_PER_BLOCK", 2)  # several blocks from few events
    path = tmp_path / "s.zarr"
    with ReplayWriter.open(path, small_meta()) as w:
        first = w.append_event({"type": "intervention", "kind": "operator", "reason": "cube fell", "step": np.int64(3)})
        assert first["seq"] == 0 and first["step"] == 3 and first["time"] > 0
        w.append_event({"type": "reset_done", "time": 12.5})
        # No episode open: the event still lands (the log belongs to the store, not to an episode).
        assert ReplayReader(path).events()[1] == {"seq": 1, "time": 12.5, "type": "reset_done"}
        for bad, message in [({"reason": "x"}, "type"), ({"type": "x", "seq": 9}, "seq"),
                             ({"type": "x", "v": float("nan")}, "JSON")]:
            with pytest.raises(ValueError, match=message):
                w.append_event(bad)
    with ReplayWriter.open(path, small_meta()) as w:
        w.append_event({"type": "help_requested", "source": "arm"})
        assert [e["seq"] for e in ReplayReader(path).events()] == [0, 1, 2]
        w.append_event({"type": "help_resolved", "source": "arm"})
    r = ReplayReader(path)
    assert [e["type"] for e in r.events()] == ["intervention", "reset_done", "help_requested", "help_resolved"]
    assert [e["seq"] for e in r.events(since_seq=2)] == [2, 3]
    assert sorted(p.name for p in (path / "events").iterdir() if p.is_dir()) == ["000000", "000001"]
    assert r.episodes() == []


def test_event_log_leftovers_of_a_killed_writer_are_repaired(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    with ReplayWriter.open(path, small_meta()) as w:
        w.append_event({"type": "intervention"})
    # A rewrite of the block killed before its rename: the old file stays, a temp file is left.
    (path / "events" / "000000" / "zarr.json.0123.partial").write_bytes(b"half a fil")
    (path / "events" / "000001").mkdir()  # a block whose first write was killed
    with ReplayWriter.open(path, small_meta()) as w:
        assert any("partial event file" in n for n in w.repairs) and any("000001" in n for n in w.repairs)
        w.append_event({"type": "reset_done"})
    assert not list(path.rglob("*.partial"))
    assert [(e["seq"], e["type"]) for e in ReplayReader(path).events()] == [(0, "intervention"), (1, "reset_done")]


def test_reader_in_another_process_sees_only_committed_steps(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    done = tmp_path / "writer-done"
    meta = small_meta()
    with ReplayWriter.open(path, meta, chunk_steps=4) as w:
        first = w.begin_episode("practice", "forward")
        write_pattern(first, w.meta, 3)
        first.close()
        reader = spawn("reader", str(path), str(done))
        try:
            assert read_line(reader) == "READY"
            for i in range(6):
                ep = w.begin_episode("practice", "forward" if i % 2 else "backward")
                for _ in range(30):
                    write_pattern(ep, w.meta, 1, flush_every=7)
                    time.sleep(0.004)  # give the reader time to catch episodes half-written
                ep.close(success=bool(i % 2))
            done.touch()
            report = json.loads(read_line(reader))
            reader.wait(CHILD_TIMEOUT_S)
        finally:
            stop(reader)
    assert report["mismatches"] == []
    assert report["closed_seen"] == 7
    assert report["open_reads"] > 0  # it really read episodes that were being written
    assert report["reads"] > report["open_reads"]


# -- child processes ----------------------------------------------------------------------------


def _child_hold_lock(path: str) -> None:
    w = ReplayWriter.open(path, small_meta())
    print("LOCKED", flush=True)
    sys.stdin.readline()  # the parent kills us; EOF also ends the wait
    w.close()


def _child_fork_and_hold(path: str) -> None:
    w = ReplayWriter.open(path, small_meta())
    pid = os.fork()
    if pid == 0:  # a worker forked after the store was opened, living on
        # Printed by the fork itself: its at-fork hook has run by now (on a busy machine the
        # parent may run on long before the child is first scheduled).
        print(os.getpid(), flush=True)
        time.sleep(CHILD_TIMEOUT_S)
        os._exit(0)
    sys.stdin.readline()
    w.close()


def _child_leave_crash_state(path: str) -> None:
    """Commit episode A (closed) and 8 steps of B, then do what a writer killed mid-chunk leaves."""
    w = ReplayWriter.open(path, small_meta(), chunk_steps=4)
    a = w.begin_episode("demo", "forward")
    write_pattern(a, w.meta, 6)
    a.close(success=True)
    b = w.begin_episode("practice", "forward")
    write_pattern(b, w.meta, 10)  # 8 committed, 2 buffered
    g = zarr.open_group(path, mode="r+")
    for key in ("obs/front", "action", "timestamp"):
        arr = g[f"episodes/{b.id}/{key}"]
        arr.resize((16, *arr.shape[1:]))  # sizes grown ahead of the data, as zarr's append does
        arr[8:16] = np.full((8, *arr.shape[1:]), 7, dtype=arr.dtype)  # data landed, marker not
    ep_dir = Path(path) / "episodes" / b.id
    (ep_dir / "zarr.json.0123abcd.partial").write_text('{"attributes": {"len')
    (Path(path) / "zarr.json.feed.partial").write_text("{")  # killed while counting episode ids
    print("CRASHED", flush=True)
    os._exit(0)  # no close, no cleanup: like kill -9


def _child_reader(path: str, done: str) -> None:
    r = ReplayReader(path)
    meta = r.meta
    reads = open_reads = 0
    mismatches: list[str] = []
    closed_seen: set[str] = set()
    print("READY", flush=True)
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    last_pass = False
    while time.monotonic() < deadline:
        last_pass = os.path.exists(done)
        for info in r.episodes(include_open=True):
            data = r.read(info.id)
            n = len(data["timestamp"])
            reads += 1
            if n < info.length:
                mismatches.append(f"{info.id}: read {n} steps, listed {info.length}")
            if not info.closed and n > 0:
                open_reads += 1
            if info.closed:
                closed_seen.add(info.id)
            mismatches += [f"{info.id}: {m}" for m in pattern_mismatches(meta, int(info.id), data)]
        if last_pass:
            break
    print(json.dumps({"reads": reads, "open_reads": open_reads, "mismatches": mismatches[:20],
                      "closed_seen": len(closed_seen)}), flush=True)


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    children = {
        "hold-lock": _child_hold_lock,
        "fork-and-hold": _child_fork_and_hold,
        "leave-crash-state": _child_leave_crash_state,
        "reader": _child_reader,
    }
    children[mode](*rest)
