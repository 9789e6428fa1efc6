"""What the replay store costs on an S3-compatible server: requests and seconds per operation.

Starts moto's server as a subprocess (as tests/test_fleet_s3.py does), then measures:
- one request (a small PUT, GET and HEAD; median of a few) — moto's own cost per request;
- the writer: open (lock + repair), begin_episode, each chunk commit, close;
- the reader as the learner's StoreTail uses it: the first poll (every episode read whole) and a
  poll with nothing new (the cost a fleet learner pays per robot every poll_s).
Requests are counted from moto's request log (one line per HTTP request), by method.
The store is shaped as the sim daemon records it (configs: two cameras, proprio, state vector).

    python bench/s3_store.py [--episodes 4] [--steps 40]

Writes bench/results/s3-store.json.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from learner.tail import StoreTail  # noqa: E402
from replay.location import S3Location, S3Options  # noqa: E402
from replay.store import ReplayWriter  # noqa: E402
from robot_server.daemon import store_meta  # noqa: E402
from sim.task import STATE_DIM  # noqa: E402
from spec.config import load_config  # noqa: E402
from spec.step import ActionSpace, ObsSpec  # noqa: E402
from tests.s3_server import CREDENTIALS, s3_server  # noqa: E402

BUCKET = "bench"
_REQUEST = re.compile(r'"(GET|PUT|POST|HEAD|DELETE) ')


class RequestLog:
    """Counts the HTTP requests moto has logged since the last `take()`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def take(self) -> dict[str, int]:
        time.sleep(0.05)  # let the server's log line land
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            text = f.read().decode(errors="replace")
            self.offset = f.tell()
        counts = collections.Counter(m.group(1) for m in _REQUEST.finditer(text))
        return {**dict(sorted(counts.items())), "total": sum(counts.values())}


def measured(log: RequestLog, fn: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
    log.take()
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    return out, {"seconds": round(seconds, 4), "requests": log.take()}


def one_request(fs: Any, log: RequestLog, repeats: int = 9) -> dict[str, Any]:
    key = f"{BUCKET}/probe/one.bin"
    out: dict[str, Any] = {}
    for name, fn in (("put", lambda: fs.pipe_file(key, b"x" * 1024)), ("get", lambda: fs.cat_file(key)),
                     ("head", lambda: fs.info(key, refresh=True) if hasattr(fs, "invalidate_cache") else None)):
        times = []
        for _ in range(repeats):
            fs.invalidate_cache()
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out[name] = {"median_ms": round(statistics.median(times) * 1000, 2), "min_ms": round(min(times) * 1000, 2)}
    log.take()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=4)
    ap.add_argument("--steps", type=int, default=40, help="steps per episode (the fleet test's phase_steps)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "s3-store.json"))
    args = ap.parse_args()
    os.environ.update(CREDENTIALS)

    cfg = load_config("sim", env={})
    space = ActionSpace(cfg.action, cfg.workspace)
    spec = ObsSpec.from_config(cfg, "pixels", STATE_DIM)
    meta = store_meta(cfg, space, spec)
    rng = np.random.default_rng(0)
    t = time.time()

    def step() -> dict[str, Any]:
        nonlocal t
        t += 0.1
        return {**{f"obs/{c.name}": rng.integers(0, 256, (c.height, c.width, 3), np.uint8) for c in spec.cameras},
                "obs/proprio": rng.uniform(-1, 1, spec.proprio_dim).astype(np.float32),
                "obs/state": rng.uniform(-1, 1, STATE_DIM).astype(np.float32),
                "action": rng.uniform(-1, 1, space.dim).astype(np.float32),
                "timestamp": t, "policy_version": 0, "intervention": False}

    with tempfile.TemporaryDirectory() as tmp, s3_server(Path(tmp) / "moto.log") as srv:
        srv.create_bucket(BUCKET)
        opts = S3Options(endpoint_url=srv.endpoint_url)
        log = RequestLog(Path(tmp) / "moto.log")
        import s3fs

        fs = s3fs.S3FileSystem(**opts.storage_options())  # as the store makes it: one GET per read
        result: dict[str, Any] = {
            "machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg(), "python": platform.python_version()},
            "store": {"chunk_steps": cfg.store.chunk_steps,
                      "episodes": args.episodes, "steps": args.steps},
            "one_request": one_request(fs, log),
        }
        url = f"s3://{BUCKET}/robot"
        writer, result["writer_open"] = measured(log, lambda: ReplayWriter.open(url, meta, cfg.store.chunk_steps, s3=opts))
        begins, commits, closes = [], [], []
        for i in range(args.episodes):
            ep, m = measured(log, lambda i=i: writer.begin_episode("practice", ("forward", "backward")[i % 2]))
            begins.append(m)
            for _ in range(args.steps):
                s = step()
                if ep._fill == ep._chunk:  # this append writes and commits a chunk
                    commits.append(measured(log, lambda s=s, ep=ep: ep.append(s))[1])
                else:
                    ep.append(s)
            closes.append(measured(log, lambda ep=ep: ep.close(success=None))[1])
        result["writer_close_store"] = measured(log, writer.close)[1]

        def mean(rows: list[dict[str, Any]]) -> dict[str, Any]:
            if not rows:
                return {}
            return {"n": len(rows), "seconds": round(statistics.mean(r["seconds"] for r in rows), 4),
                    "requests": round(statistics.mean(r["requests"]["total"] for r in rows), 1)}

        result["begin_episode"], result["chunk_commit"], result["close_episode"] = mean(begins), mean(commits), mean(closes)
        # What a state-mode learner tails (learner/trainer.py: spec keys + action, version, intervention).
        keys = ["obs/proprio", "obs/state", "action", "policy_version", "intervention"]
        tail = StoreTail(S3Location(url, opts), keys)
        chunks, result["tail_first_poll"] = measured(log, tail.poll)
        result["tail_first_poll"]["steps"] = sum(len(c) for c in chunks)
        polls = [measured(log, tail.poll)[1] for _ in range(3)]
        result["tail_idle_poll"] = polls[-1]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
