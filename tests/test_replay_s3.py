"""The replay store on an S3-compatible object store (moto's server, a real HTTP server in a subprocess).

Same guarantees as on disk (replay/store.py): data first, the `length` marker after, readers trust
only the marker, a writer restarted after a kill -9 closes what was left open and trims past the
marker, and one writer per prefix (a lock object with a heartbeat, replay/s3_lock.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from replay.location import S3Location, S3Options
from replay.s3_lock import LOCK_KEY
from replay.store import ReplayReader, ReplayWriter, StoreLockedError
from tests.s3_server import CREDENTIALS, S3Server, s3_server
from tests.store_patterns import pattern_meta, pattern_mismatches, pattern_step

REPO = Path(__file__).resolve().parents[1]
BUCKET = "replay-tests"
CHILD_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with s3_server(tmp_path_factory.mktemp("moto") / "moto.log") as srv:
        srv.create_bucket(BUCKET)
        yield srv


@pytest.fixture
def s3(server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Options:
    for k, v in CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    return S3Options(endpoint_url=server.endpoint_url, lock_lease_s=6.0)


_count = iter(range(10**6))


def url(name: str) -> str:
    return f"s3://{BUCKET}/{name}-{os.getpid()}-{next(_count)}"


def meta():
    return pattern_meta(cameras=(("front", 12, 16),), proprio_dim=3, action_dim=2)


def write(ep, meta_attrs, seed: int, n: int, start: int = 0) -> None:
    for t in range(start, start + n):
        ep.append(pattern_step(meta_attrs, seed, t))


def test_round_trip_commit_marker_and_events(s3: S3Options) -> None:
    where = url("roundtrip")
    with ReplayWriter.open(where, meta(), chunk_steps=4, s3=s3) as w:
        ep = w.begin_episode("practice", "forward", {"session": "s1"})
        write(ep, w.meta, int(ep.id), 10)  # two whole chunks written, two steps buffered
        r = ReplayReader(where, s3=s3)
        assert r.episode(ep.id).length == 8 and ep.committed == 8
        assert pattern_mismatches(r.meta, int(ep.id), r.read(ep.id)) == []
        ep.flush()
        assert len(r.read(ep.id)["action"]) == 10
        w.append_event({"type": "intervention", "reason": "cube fell"})
        info = ep.close(success=True)
        second = w.begin_episode("demo", "backward")
        write(second, w.meta, int(second.id), 5)
        second.close(success=False)
    r = ReplayReader(where, s3=s3)
    eps = r.episodes()
    assert [(e.id, e.length, e.closed) for e in eps] == [(info.id, 10, True), (second.id, 5, True)]
    for e in eps:
        assert pattern_mismatches(r.meta, int(e.id), r.read(e.id)) == [], e.id
    idx = np.array([9, 0, 4])
    assert np.array_equal(r.read_steps(info.id, idx, ["timestamp"])["timestamp"], r.read(info.id)["timestamp"][idx])
    assert [e["type"] for e in r.events()] == ["intervention"]
    # The lock object is gone once the writer closed; a new writer opens at once.
    assert not S3Location(where, s3).fs.exists(f"{BUCKET}/{S3Location(where, s3).key(LOCK_KEY)}")
    with ReplayWriter.open(where, meta(), chunk_steps=4, s3=s3) as w:
        assert w.repairs == []


def test_readers_trust_only_the_marker(s3: S3Options) -> None:
    """Data written past the marker (a writer killed between its data and its commit) stays invisible."""
    where = url("marker")
    with ReplayWriter.open(where, meta(), chunk_steps=4, s3=s3) as w:
        ep = w.begin_episode("practice", "forward")
        write(ep, w.meta, int(ep.id), 4)
        ep.flush()
        write(ep, w.meta, int(ep.id), 3, start=4)
        ep._write_data()  # the data of steps 4..6 lands, the marker still says 4
        r = ReplayReader(where, s3=s3)
        assert r.episode(ep.id).length == 4
        assert len(r.read(ep.id)["action"]) == 4
        with pytest.raises(IndexError):
            r.read_steps(ep.id, [5])


def test_one_writer_per_prefix(s3: S3Options) -> None:
    where = url("lock")
    with ReplayWriter.open(where, meta(), s3=s3):
        with pytest.raises(StoreLockedError, match="already open for writing by pid"):
            ReplayWriter.open(where, meta(), s3=s3)
        # Another prefix in the same bucket is another store, with its own writer.
        with ReplayWriter.open(url("lock-other"), meta(), s3=s3):
            pass


def test_a_writer_whose_lock_was_taken_over_stops_writing(s3: S3Options) -> None:
    """If a stalled writer's lease ran out and another took the prefix, the stalled one must not write on."""
    where = url("takeover")
    w = ReplayWriter.open(where, meta(), chunk_steps=4, s3=s3)
    loc = S3Location(where, s3)
    stale = {"owner": "x", "pid": 1, "host": "elsewhere", "heartbeat_at": time.time() - 60, "lease_s": 6.0}
    loc.fs.pipe_file(f"{BUCKET}/{loc.key(LOCK_KEY)}", json.dumps(stale).encode())  # the takeover, as seen by w
    deadline = time.monotonic() + 10
    while w._lock.held and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not w._lock.held
    with pytest.raises(Exception, match="closed"):
        w.begin_episode("practice", "forward")


CHILD = """
import os, sys
from replay.location import S3Options
from replay.store import ReplayWriter
from tests.store_patterns import pattern_meta, pattern_step
meta = pattern_meta(cameras=(("front", 12, 16),), proprio_dim=3, action_dim=2)
w = ReplayWriter.open(sys.argv[1], meta, chunk_steps=4, s3=S3Options(endpoint_url=sys.argv[2]))
ep = w.begin_episode("practice", "forward")
for t in range(1000):
    ep.append(pattern_step(w.meta, int(ep.id), t))
    print("COMMITTED", ep.id, ep.committed, flush=True)
"""


def test_kill_9_mid_episode_then_restart_repairs(s3: S3Options, server: S3Server) -> None:
    where = url("crash")
    env = {**os.environ, **server.env(), "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, where, server.endpoint_url], stdout=subprocess.PIPE,
                             text=True, env=env, cwd=REPO)
    committed, ep_id = 0, ""
    try:
        assert child.stdout is not None
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        while committed < 30 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if line.startswith("COMMITTED"):
                _, ep_id, n = line.split()
                committed = int(n)
        assert committed >= 30, "the child never got going"
        child.send_signal(signal.SIGKILL)  # mid-append: some steps buffered, perhaps a chunk half-sent
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    r = ReplayReader(where, s3=s3)
    at_kill = r.episode(ep_id).length
    assert at_kill >= committed  # every step reported committed is there
    # The same host and a dead pid: the restarted writer takes the lock at once, no lease wait.
    t0 = time.monotonic()
    with ReplayWriter.open(where, meta(), chunk_steps=4, s3=s3) as w:
        assert time.monotonic() - t0 < s3.lock_lease_s
        assert any(f"closed episode {ep_id}" in n for n in w.repairs), w.repairs
        nxt = w.begin_episode("practice", "backward")
        write(nxt, w.meta, int(nxt.id), 6)
        nxt.close()
    r = ReplayReader(where, s3=s3)
    repaired = r.episode(ep_id)
    assert repaired.closed and repaired.attrs["end_reason"] == "writer_crashed" and repaired.length == at_kill
    for info in r.episodes():
        assert pattern_mismatches(r.meta, int(info.id), r.read(info.id)) == [], info.id
    import zarr

    arr = zarr.open_array(store=S3Location(where, s3).zarr_store(read_only=True), path=f"episodes/{ep_id}/action")
    assert arr.shape[0] == at_kill  # arrays shrunk back to the marker
    assert [e.id for e in r.episodes()] == [ep_id, nxt.id]


def test_discard_on_the_object_store(s3: S3Options) -> None:
    where = url("discard")
    with ReplayWriter.open(where, meta(), chunk_steps=4, s3=s3) as w:
        ep = w.begin_episode("demo", "forward")
        write(ep, w.meta, int(ep.id), 6)
        ep.close(success=True)
        w._current = None
        r = ReplayReader(where, s3=s3)
        assert [e.id for e in r.episodes()] == [ep.id]
        ep.discard()
        assert r.episodes() == []
        assert [n for n in S3Location(where, s3).children("episodes") if n != "zarr.json"] == []


def test_bad_urls_are_refused_with_the_value() -> None:
    with pytest.raises(ValueError, match="needs a bucket and a prefix"):
        S3Location("s3://only-bucket")
