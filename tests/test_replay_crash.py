"""kill -9 of the replay writer at random moments: closed episodes stay whole, the open one loses at
most one chunk, and the next writer repairs the store and carries on.

Run as a script, this file is the writer child: it appends pattern steps forever, closing an episode
every EPISODE_STEPS steps and flushing every FLUSH_EVERY, and logs each step it was told succeeded.
Set REPLAY_CRASH_SEED to replay a failing sequence of kill delays.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from store_patterns import pattern_meta, pattern_mismatches, pattern_step

from replay.store import ReplayReader, ReplayWriter

HERE = Path(__file__).resolve()
CHUNK = 8
EPISODE_STEPS = 29  # not a multiple of CHUNK: closes leave partial chunks
FLUSH_EVERY = 11
# When to SIGKILL: ("spawn", s) counts from process start, so it lands during imports, open and
# repair (start-up takes ~0.5-1 s, longer on a busy machine); ("open", s) counts from the child's
# OPEN line, so it lands while it appends, flushes and closes, whatever the machine's speed.
KILLS = (("spawn", 0.3), ("spawn", 0.7), ("spawn", 1.0), ("open", 0.0), ("open", 0.15), ("open", 0.4), ("open", 0.7))
OPEN_TIMEOUT_S = 30


def meta():
    return pattern_meta(cameras=(("front", 24, 32), ("wrist", 16, 16)), proprio_dim=4, action_dim=4, state_dim=2)


@dataclass
class Reported:
    appended: int = 0
    flushed: int = 0
    closed: int | None = None


def parse_log(text: str) -> dict[str, Reported]:
    eps: dict[str, Reported] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue  # a line cut by the kill, or OPEN
        tag, ep_id, n = parts[0], parts[1], int(parts[2])
        rep = eps.setdefault(ep_id, Reported())
        if tag == "A":
            rep.appended = n
        elif tag == "F":
            rep.flushed = n
        elif tag == "C":
            rep.closed = n
    return eps


def check_after_kill(path: Path, log: dict[str, Reported], known_closed: dict, committed_at_kill: dict) -> None:
    if not (path / "zarr.json").exists():
        assert not log, "episodes were reported but the store has no root metadata"
        return
    r = ReplayReader(path)
    infos = {i.id: i for i in r.episodes(include_open=True)}
    for ep_id, info in infos.items():
        data = r.read(ep_id)
        assert len(data["timestamp"]) == info.length, ep_id
        assert pattern_mismatches(r.meta, int(ep_id), data) == [], f"episode {ep_id} is not what was written"
        if ep_id in known_closed:
            assert info == known_closed[ep_id], f"closed episode {ep_id} changed"
        if info.closed:
            known_closed[ep_id] = info
    for ep_id, length in committed_at_kill.items():  # open at an earlier kill; repaired since, or not yet
        if ep_id in infos:
            assert infos[ep_id].length == length, f"repair of {ep_id} changed its committed length"
            if infos[ep_id].closed:
                assert infos[ep_id].attrs["end_reason"] == "writer_crashed"
        else:
            assert length == 0, f"episode {ep_id} with {length} committed steps disappeared"
    for ep_id, rep in log.items():
        info = infos.get(ep_id)
        if rep.closed is not None:
            assert info is not None and info.closed and info.length == rep.closed == EPISODE_STEPS
            assert info.attrs["end_reason"] == "closed"
        elif info is not None and info.closed:
            assert info.length == EPISODE_STEPS  # the close landed, its log line did not
        else:
            committed = info.length if info is not None else 0
            assert rep.flushed <= committed <= rep.appended + 1, (ep_id, rep, committed)
            assert rep.appended - committed <= CHUNK, f"lost {rep.appended - committed} steps of {ep_id}"
            committed_at_kill[ep_id] = committed


def wait_for_open(log_path: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + OPEN_TIMEOUT_S
    while not log_path.read_text().startswith("OPEN"):
        assert proc.poll() is None, f"writer died on start: {proc.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < deadline, f"writer did not open the store in {OPEN_TIMEOUT_S} s"
        time.sleep(0.005)


def test_kill_minus_nine_at_random_moments(tmp_path: Path) -> None:
    seed = int(os.environ.get("REPLAY_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    kills = [(anchor, d + rng.uniform(0, 0.3)) for anchor, d in KILLS]
    rng.shuffle(kills)
    path = tmp_path / "s.zarr"
    known_closed: dict = {}
    committed_at_kill: dict[str, int] = {}
    all_ids: list[str] = []
    for run, (anchor, delay) in enumerate(kills):
        log_path = tmp_path / f"run{run}.log"
        with open(log_path, "w") as log_file:
            proc = subprocess.Popen(
                [sys.executable, str(HERE), str(path)], stdout=log_file, stderr=subprocess.PIPE, cwd=HERE.parents[1]
            )
            try:
                if anchor == "open":
                    wait_for_open(log_path, proc)
                time.sleep(delay)
                assert proc.poll() is None, f"writer died by itself: {proc.stderr.read().decode()[-2000:]}"
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
                proc.stderr.close()
        log = parse_log(log_path.read_text())
        all_ids += list(log)
        context = f"run {run}, killed {delay:.2f} s after {anchor}, REPLAY_CRASH_SEED={seed}"
        try:
            check_after_kill(path, log, known_closed, committed_at_kill)
        except AssertionError as e:
            raise AssertionError(f"{context}: {e}") from e
    assert all_ids == sorted(all_ids, key=int) and len(set(all_ids)) == len(all_ids), "episode ids reused"
    assert any(n > 0 for n in committed_at_kill.values()), f"no kill landed mid-episode (seed {seed})"

    # The next writer repairs whatever the last kill left, and recording carries on.
    with ReplayWriter.open(path, meta(), chunk_steps=CHUNK) as w:
        ep = w.begin_episode("practice", "forward")
        for t in range(2 * CHUNK + 3):
            ep.append(pattern_step(w.meta, int(ep.id), t))
        new = ep.close(success=True)
    r = ReplayReader(path)
    infos = r.episodes(include_open=True)
    assert all(i.closed for i in infos)
    assert infos[-1].id == new.id and new.length == 2 * CHUNK + 3
    for info in infos:
        assert pattern_mismatches(r.meta, int(info.id), r.read(info.id)) == [], info.id
        if info.id in known_closed:
            assert info == known_closed[info.id]
        elif info.id in committed_at_kill:
            assert info.length == committed_at_kill[info.id] and info.attrs["end_reason"] == "writer_crashed"


def _writer_child(path: str) -> None:
    w = ReplayWriter.open(path, meta(), chunk_steps=CHUNK)
    print("OPEN", len(w.repairs), flush=True)
    deadline = time.monotonic() + 60  # the parent kills us long before; never linger
    while time.monotonic() < deadline:
        ep = w.begin_episode("practice", "forward", {"run_pid": os.getpid()})
        for t in range(EPISODE_STEPS):
            ep.append(pattern_step(w.meta, int(ep.id), t))
            print("A", ep.id, ep.length, flush=True)
            if (t + 1) % FLUSH_EVERY == 0:
                ep.flush()
                print("F", ep.id, ep.length, flush=True)
        info = ep.close(success=True)
        print("C", ep.id, info.length, flush=True)
    w.close()


if __name__ == "__main__":
    _writer_child(sys.argv[1])
