"""A full disk under the replay store (issue 12, item 4): the writer stops cleanly, every committed
step stays intact, practice pauses (the arm holds) instead of running unrecorded, the operator is
told why, and practice resumes by itself once space returns.

Two ways to fill the disk: a real, small tmpfs (needs root and `mount`; skipped where the
container forbids it), and ENOSPC raised by the store's own file-write primitive, which runs
everywhere.
"""

from __future__ import annotations

import contextlib
import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from inproc_daemon import sim_daemon, wait_until
from store_patterns import pattern_meta, pattern_mismatches, pattern_step

import replay.atomic
import replay.space
import robot_server.store_space
from replay.store import ReplayReader, ReplayWriter, StoreFullError
from robot_server.daemon import Daemon
from robot_server.session import SessionParams
from spec.config import ConfigError, parse_config
from spec.files import PARTIAL_SUFFIX

# -- a real small filesystem ---------------------------------------------------------------------


@contextlib.contextmanager
def mounted_small_disk(where: Path, size: str) -> Iterator[Path | None]:
    """A tmpfs of `size` at `where`, or None where this container may not mount one."""
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        yield None
        return
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=10)


@contextlib.contextmanager
def small_disk(where: Path, size: str = "4m") -> Iterator[Path]:
    with mounted_small_disk(where, size) as disk:
        if disk is None:
            pytest.skip("cannot mount a small tmpfs here (needs root and a container that allows mount)")
        yield disk


def fill(disk: Path, leave_kb: int = 0) -> Path:
    """Take the disk's free space with one file, then give back `leave_kb`."""
    filler = disk / "filler.bin"
    block = np.random.default_rng(0).bytes(64 * 1024)
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(block)
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC
    if leave_kb:
        with open(filler, "r+b") as f:
            f.truncate(max(0, filler.stat().st_size - leave_kb * 1024))
    return filler


def partial_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(PARTIAL_SUFFIX) or p.name.startswith(".trash-")]


def meta():
    return pattern_meta(cameras=(("front", 32, 32),), proprio_dim=4, action_dim=4)


def append_until_full(ep, meta: dict, start: int, limit: int = 10_000) -> StoreFullError:
    for t in range(start, start + limit):
        try:
            ep.append(pattern_step(meta, int(ep.id), t))
        except StoreFullError as exc:
            return exc
    raise AssertionError(f"no StoreFullError after {limit} appends")


def test_a_real_full_disk_keeps_committed_steps_and_the_store_goes_on(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk") as disk:
        path = disk / "s.zarr"
        w = ReplayWriter.open(path, meta(), chunk_steps=4)
        a = w.begin_episode("practice", "forward")
        for t in range(10):
            a.append(pattern_step(w.meta, int(a.id), t))
        a.close()
        b = w.begin_episode("practice", "backward")
        for t in range(6):
            b.append(pattern_step(w.meta, int(b.id), t))
        b.flush()
        filler = fill(disk)

        exc = append_until_full(b, w.meta, 6)
        assert str(path) in str(exc) and "MB free" in str(exc) and "No space left" in str(exc)
        assert exc.path == path and exc.free_bytes is not None and exc.free_bytes < 64 * 1024
        committed = b.committed
        assert committed >= 6
        lost = b.abandon("store_full")
        assert 1 <= lost <= 4  # at most one chunk of buffered steps
        assert not partial_files(path), "a half-written file is visible"

        # Readers see every committed step, exactly; nothing of the failed write.
        r = ReplayReader(path)
        infos = {i.id: i for i in r.episodes(include_open=True)}
        assert infos[a.id].length == 10 and infos[a.id].closed
        assert infos[b.id].length == committed
        for ep_id in infos:
            assert pattern_mismatches(r.meta, int(ep_id), r.read(ep_id)) == [], ep_id

        # Space comes back: the next episode first closes the abandoned one, then appends.
        filler.unlink()
        c = w.begin_episode("practice", "forward")
        for t in range(9):
            c.append(pattern_step(w.meta, int(c.id), t))
        c.close()
        w.close()

        r = ReplayReader(path)
        infos = {i.id: i for i in r.episodes()}
        assert [(infos[e].length, infos[e].attrs["end_reason"]) for e in (a.id, b.id, c.id)] == [
            (10, "closed"), (committed, "store_full"), (9, "closed")]
        for ep_id in infos:
            assert pattern_mismatches(r.meta, int(ep_id), r.read(ep_id)) == [], ep_id
        with ReplayWriter.open(path, meta(), chunk_steps=4) as again:
            assert again.repairs == [], "the store was left consistent: nothing to repair on the next start"


def test_a_full_event_log_raises_the_typed_error_and_loses_no_event(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "1m") as disk:
        path = disk / "s.zarr"
        with ReplayWriter.open(path, meta(), chunk_steps=4) as w:
            w.append_event({"type": "intervention", "reason": "before"})
            filler = fill(disk)
            with pytest.raises(StoreFullError, match="appending to the event log"):
                for i in range(10_000):  # the event block grows until it no longer fits
                    w.append_event({"type": "intervention", "reason": "x" * 500, "i": i})
            written = len(ReplayReader(path).events())
            filler.unlink()
            w.append_event({"type": "intervention", "reason": "after"})
        events = ReplayReader(path).events()
        assert [e["seq"] for e in events] == list(range(written + 1)) and events[-1]["reason"] == "after"


# -- the daemon ----------------------------------------------------------------------------------

SPACE_ENV = {"ROBOT__STORE__MIN_FREE_MB": "0", "ROBOT__STORE__RESUME_FREE_MB": "1",
             "ROBOT__STORE__SPACE_CHECK_S": "0.2", "ROBOT__STORE__CHUNK_STEPS": "4"}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """One sim daemon for the module (it takes seconds to start); its store is on a small tmpfs
    where one can be mounted (`daemon.small_disk`), else on the test's own disk."""
    tmp = tmp_path_factory.mktemp("disk_full")
    with mounted_small_disk(tmp / "disk", "16m") as disk:
        store = (disk or tmp) / "store.zarr"
        with sim_daemon(tmp, {**SPACE_ENV, "ROBOT__STORE__PATH": str(store)}) as d:
            d.small_disk = disk
            yield d


def start_practice(d: Daemon) -> str:
    params = SessionParams(policy="random", phase_steps=1000, home_every=0, home_at_start=False)
    return d.loop.submit(lambda s: s.start_session(params))["id"]


def session(d: Daemon) -> dict:
    return d.status().get("session") or {}


def store_help(st: dict) -> list[dict]:
    return [h for h in st["help_requests"] if h["source"] == "store"]


def wait_paused_for_store(d: Daemon, timeout: float) -> dict:
    return wait_until(lambda: (st := d.status())["stage"] == "paused" and st["session"]["paused_for_store"]
                      and store_help(st) and st, timeout, "practice to pause for the full store")


def check_holds(d: Daemon, seconds: float) -> None:
    """While paused for the disk: no step is counted and no target is sent to the arm."""
    steps, targets = session(d)["total_steps"], d.loop.arm.stats.targets
    ticks = d.loop.stats.ticks
    wait_until(lambda: d.loop.stats.ticks >= ticks + int(seconds * 10) - 1, seconds + 5, "ticks while paused")
    assert session(d)["total_steps"] == steps, "practice went on unrecorded"
    assert d.loop.arm.stats.targets == targets, "the arm was moved while paused"
    assert d.loop.last_source == "store_full"


def check_store_reads_back(d: Daemon, sid: str) -> list:
    """Every episode of the session reads back whole: its committed length, nothing half-written."""
    r = ReplayReader(d.cfg.store.path)
    eps = [e for e in r.episodes(include_open=True) if e.attrs.get("session") == sid]
    for e in eps:
        data = r.read(e.id)
        assert all(len(v) == e.length for v in data.values()), e.id
        ts = data["timestamp"]
        assert np.all(ts > 0) and np.all(np.diff(ts) > 0), f"episode {e.id} holds unwritten (zero) steps"
    return eps


def test_enospc_from_the_store_files_pauses_practice_and_it_resumes(daemon: Daemon, monkeypatch) -> None:
    """ENOSPC raised where the store writes its files (and a probe that finds no space), as a full disk."""
    disk_full = False
    real_write = replay.atomic.atomic_write_bytes
    real_free = robot_server.store_space.free_bytes

    def write(path, data, *a, **kw):
        if disk_full:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(path, data, *a, **kw)

    def free(path):
        return 0 if disk_full else real_free(path)

    monkeypatch.setattr(replay.atomic, "atomic_write_bytes", write)
    monkeypatch.setattr(robot_server.store_space, "free_bytes", free)
    monkeypatch.setattr(replay.space, "free_bytes", free)
    d = daemon
    sid = start_practice(d)
    wait_until(lambda: d.recorder.stats.steps >= 10, 30, "ten steps stored")
    assert d.recorder.flush(10)
    committed_before = {e.id: e.length for e in check_store_reads_back(d, sid)}

    disk_full = True
    st = wait_paused_for_store(d, 10)
    full = st["store"]["full"]
    assert full["path"] == str(d.cfg.store.path) and full["free_mb"] == 0.0
    assert "No space left on device" in full["cause"] and str(d.cfg.store.path) in full["message"]
    assert store_help(st)[0]["reason"] == full["message"]
    assert any(e["event"] == "session_paused" and e.get("by") == "store" for e in st["recent_events"])
    check_holds(d, 1.0)
    lost = d.status()["store"]["steps_lost"]
    assert 1 <= lost <= 4 + 5, "at most one chunk plus the ticks before the pause are lost"
    with pytest.raises(Exception, match="cannot take more steps"):
        d.loop.submit(lambda s: s.resume_session())
    assert d.loop.running and d.loop.crashed is None

    # Readers: the committed steps, whole. Not even the closing marker fits on this disk, so the
    # segment the disk cut still reads as open at its committed length; its close is owed.
    eps = check_store_reads_back(d, sid)
    assert all(e.length >= committed_before[e.id] for e in eps if e.id in committed_before)
    assert [e.id for e in eps if not e.closed] == d.status()["store"]["episodes_untidy"] != []
    assert not partial_files(Path(d.cfg.store.path))

    stored_before = d.recorder.stats.steps
    disk_full = False
    st = wait_until(lambda: (st := d.status())["stage"] == "acting" and st, 10, "practice to resume")
    assert st["store"]["full"] is None and store_help(st) == []
    wait_until(lambda: d.recorder.stats.steps >= stored_before + 10, 20, "new steps stored")
    d.loop.submit(lambda s: s.stop_session())
    assert d.recorder.flush(10)

    r = ReplayReader(d.cfg.store.path)
    eps = [e for e in r.episodes() if e.attrs.get("session") == sid]
    reasons = [e.attrs["end_reason"] for e in eps]
    assert reasons[-1] == "stopped by operator" and "store_full" in reasons[:-1]
    cut = eps[reasons.index("store_full")]
    assert cut.length >= committed_before.get(cut.id, 0) and d.status()["store"]["episodes_untidy"] == []
    check_store_reads_back(d, sid)
    # The event log kept the pause and the resume, written once the disk had room again.
    stored = [(e["type"], e.get("by") or e.get("source")) for e in r.events() if e.get("session", sid) == sid]
    assert ("session_paused", "store") in stored and ("session_resumed", "store") in stored
    assert ("help_requested", "store") in stored and ("help_resolved", "store") in stored
    resumed = next(e for e in r.events() if e["type"] == "session_resumed" and e.get("by") == "store")
    assert resumed["steps_lost"] == lost


def test_a_real_full_disk_pauses_practice_until_space_returns(daemon: Daemon) -> None:
    d, disk = daemon, daemon.small_disk
    if disk is None:
        pytest.skip("cannot mount a small tmpfs here (needs root and a container that allows mount)")
    sid = start_practice(d)
    wait_until(lambda: d.recorder.stats.steps >= 8, 30, "steps stored")
    filler = fill(disk, leave_kb=0)
    st = wait_paused_for_store(d, 20)
    assert str(disk) in st["store"]["full"]["message"]
    check_holds(d, 0.5)
    check_store_reads_back(d, sid)
    stored_before = d.recorder.stats.steps
    filler.unlink()
    wait_until(lambda: d.status()["stage"] == "acting", 10, "practice to resume")
    wait_until(lambda: d.recorder.stats.steps >= stored_before + 8, 20, "new steps stored")
    d.loop.submit(lambda s: s.stop_session())
    assert d.recorder.flush(10)
    eps = check_store_reads_back(d, sid)
    assert [e.attrs["end_reason"] for e in eps][-1] == "stopped by operator"
    assert all(e.closed for e in eps)


def test_config_names_a_resume_level_below_the_floor() -> None:
    with pytest.raises(ConfigError, match=r"resume_free_mb=10.0 must be at least min_free_mb=20.0"):
        parse_config({"store": {"min_free_mb": 20, "resume_free_mb": 10}}, env={})
    with pytest.raises(ConfigError, match=r"store\.space_check_s: Input should be greater than 0"):
        parse_config({"store": {"space_check_s": 0}}, env={})
