"""Load: MJPEG viewers, telemetry WebSocket clients and the learner beside the 10 Hz loop.

    python bench/load.py [--seconds 180] [--viewers 20] [--ws 20] [--with-learner|--no-learner]
                         [--out bench/results/load.json]

Starts a sim daemon process practising with the learned policy (as `make demo` does), the learner
on the same store (state mode, niced, one math thread: `make demo`'s settings), then one client
process with N MJPEG viewers (each parses every JPEG it is sent) and N telemetry WebSocket
clients (each decodes every message), while this process polls a few read routes for their
latency. Over the load window it reports the loop's period error and late/skipped ticks (the
daemon's own counters), frames/s per viewer, WebSocket messages/s, API latency per route and the
CPU of every process; writes the settings, the machine and the figures to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MUJOCO_GL", "egl")

# Read routes the poller cycles through: what an operator's page and a Prometheus scraper call.
POLL_ROUTES = ["/health", "/status", "/policies", "/episodes", "/metrics", "/cameras/wrist/snapshot"]
CONNECT_TIMEOUT_S = 60.0


# --- the client process: viewers and WebSocket clients -------------------------------------------

class Counter:
    """Events counted inside the load window only (between `start` and `end` on perf_counter)."""

    def __init__(self) -> None:
        self.first = asyncio.Event()
        self.start = float("inf")
        self.end = float("inf")
        self.count = 0
        self.bytes = 0
        self.error: str | None = None

    def add(self, nbytes: int) -> None:
        self.first.set()
        t = time.perf_counter()
        if self.start <= t < self.end:
            self.count += 1
            self.bytes += nbytes


async def _viewer(client: httpx.AsyncClient, url: str, c: Counter) -> None:
    """Read a multipart MJPEG stream part by part: every JPEG is received whole and checked."""
    buf = b""
    try:
        async with client.stream("GET", url) as r:
            r.raise_for_status()
            async for chunk in r.aiter_bytes():
                buf += chunk
                while True:
                    head_end = buf.find(b"\r\n\r\n")
                    if head_end < 0:
                        break
                    head = buf[:head_end].decode("latin-1")
                    length = next(int(line.split(":", 1)[1]) for line in head.split("\r\n")
                                  if line.lower().startswith("content-length:"))
                    body_start = head_end + 4
                    if len(buf) < body_start + length + 2:
                        break
                    jpg = buf[body_start:body_start + length]
                    if jpg[:2] != b"\xff\xd8" or jpg[-2:] != b"\xff\xd9":
                        raise ValueError("a part that is not a whole JPEG")
                    c.add(length)
                    buf = buf[body_start + length + 2:]
    except (httpx.HTTPError, ValueError, StopIteration) as exc:
        c.error = repr(exc)


async def _ws_client(url: str, c: Counter) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import WebSocketException

    try:
        async with connect(url, max_size=None) as ws:
            async for msg in ws:
                body = json.loads(msg)
                if body.get("type") != "telemetry":
                    raise ValueError(f"unexpected message {str(body)[:80]}")
                c.add(len(msg))
    except (OSError, WebSocketException, ValueError) as exc:
        c.error = repr(exc)


async def _clients(args: argparse.Namespace) -> dict[str, Any]:
    cams = args.cameras.split(",")
    viewers = [Counter() for _ in range(args.viewers)]
    sockets = [Counter() for _ in range(args.ws)]
    headers = {"Authorization": f"Bearer {args.token}"}
    limits = httpx.Limits(max_connections=args.viewers + 4, max_keepalive_connections=args.viewers + 4)
    ws_base = args.clients.replace("http://", "ws://", 1)
    async with httpx.AsyncClient(base_url=args.clients, headers=headers, limits=limits,
                                 timeout=httpx.Timeout(30.0, read=30.0)) as client:
        tasks = [asyncio.create_task(_viewer(client, f"/cameras/{cams[i % len(cams)]}/stream?fps={args.viewer_fps:g}", c))
                 for i, c in enumerate(viewers)]
        tasks += [asyncio.create_task(_ws_client(f"{ws_base}/telemetry?interval={args.ws_interval:g}&token={args.token}", c))
                  for c in sockets]
        everyone = viewers + sockets
        with contextlib.suppress(TimeoutError):  # the counters say who never got anything
            await asyncio.wait_for(asyncio.gather(*(c.first.wait() for c in everyone)), CONNECT_TIMEOUT_S)
        start = time.perf_counter()
        for c in everyone:
            c.start, c.end = start, start + args.seconds
        print("ready", flush=True)  # the parent starts its window now
        await asyncio.sleep(args.seconds)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def rates(cs: list[Counter]) -> list[dict[str, Any]]:
        return [{"per_s": round(c.count / args.seconds, 3), "count": c.count, "bytes": c.bytes, "error": c.error}
                for c in cs]

    return {"viewers": rates(viewers), "ws": rates(sockets)}


def run_clients(args: argparse.Namespace) -> None:
    out = asyncio.run(_clients(args))
    Path(args.result).write_text(json.dumps(out))


# --- the parent: daemon, learner, poller, accounting ---------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_cpu_s(stat_path: str) -> float:
    with open(stat_path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def _group_cpu_s(pgid: int) -> dict[int, float]:
    """CPU seconds of each live process in a process group (the daemon's render process included)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getpgid(int(entry)) == pgid:
                out[int(entry)] = _stat_cpu_s(f"/proc/{entry}/stat")
        except (OSError, IndexError):
            continue
    return out


def _realtime_threads(pid: int) -> int:
    """Threads of a process under a real-time policy (SCHED_FIFO/RR): did the priority take?"""
    n = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                policy = int(f.read().rsplit(")", 1)[1].split()[38])
        except (OSError, IndexError, ValueError):
            continue
        n += policy in (os.SCHED_FIFO, os.SCHED_RR)
    return n


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 3) if values else float("nan")


class Poller(threading.Thread):
    """GET each read route in turn, one request at a time, and record each latency."""

    def __init__(self, url: str, token: str, interval_s: float) -> None:
        super().__init__(name="poller", daemon=True)
        self.url, self.token, self.interval = url, token, interval_s
        self.stop = threading.Event()
        self.latency_ms: dict[str, list[float]] = {r: [] for r in POLL_ROUTES}
        self.failures: dict[str, list[str]] = {r: [] for r in POLL_ROUTES}

    def run(self) -> None:
        with httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=10) as c:
            i = 0
            while not self.stop.is_set():
                route = POLL_ROUTES[i % len(POLL_ROUTES)]
                i += 1
                t0 = time.perf_counter()
                try:
                    r = c.get(route)
                    r.read()
                    ms = (time.perf_counter() - t0) * 1e3
                    if r.status_code == 200:
                        self.latency_ms[route].append(ms)
                    else:
                        self.failures[route].append(f"{r.status_code} {r.text[:100]}")
                except httpx.HTTPError as exc:
                    self.failures[route].append(repr(exc))
                self.stop.wait(self.interval)

    def summary(self) -> dict[str, dict[str, Any]]:
        return {r: {"n": len(v), "p50_ms": _pct(v, 50), "p99_ms": _pct(v, 99),
                    "max_ms": round(max(v), 3) if v else float("nan"),
                    "failures": len(self.failures[r]), "first_failure": (self.failures[r] or [None])[0]}
                for r, v in self.latency_ms.items()}


def _learner_overrides(run_dir: Path) -> dict[str, Any]:
    """`make demo`'s learner schedule (robot_server.demo.DEMO_OVERRIDES) as config keys, state mode."""
    from robot_server.demo import DEMO_OVERRIDES

    learner: dict[str, Any] = {"mode": "state", "run_dir": str(run_dir)}
    for key, value in DEMO_OVERRIDES.items():
        learner[key.removeprefix("ROBOT__LEARNER__").lower()] = int(value)
    return learner


def _wait_learning(api: httpx.Client, learner: subprocess.Popen, timeout_s: float) -> float:
    """Block until the learner reports its first update (it trains through the whole window)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if learner.poll() is not None:
            raise RuntimeError(f"the learner exited with {learner.returncode} before its first update")
        lr = (api.get("/status").json().get("learner") or {}).get("metrics") or {}
        if lr.get("updates", 0) > 0:
            return time.monotonic() - t0
        time.sleep(2)
    raise TimeoutError(f"the learner made no update in {timeout_s:.0f} s")


def _stop_group(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def run_load(args: argparse.Namespace) -> dict[str, Any]:
    from robot_server.demo import LEARNER_NICENESS, LEARNER_THREADS
    from robot_server.timing import Window
    from tests.daemon_proc import child_environment, start_daemon, stop_daemon
    from tests.random_demos import write_random_demos

    machine = {"cpu_count": os.cpu_count(), "loadavg_before": [round(x, 2) for x in os.getloadavg()],
               "python": sys.version.split()[0]}
    work = Path(tempfile.mkdtemp(prefix="bench-load-"))
    write_random_demos(work / "store.zarr")  # classifier positives without minutes of scripted demos
    overrides = {"learner": _learner_overrides(work / "learner")}
    if args.realtime_priority:
        overrides["control"] = {"realtime_priority": args.realtime_priority}
    d = start_daemon(work, overrides=overrides, timeout=300)
    learner = clients = None
    result: dict[str, Any] = {}
    try:
        api = d.client(timeout=10)
        assert api.post("/sessions", json={"policy": "learned"}).status_code == 201, "practice did not start"
        cameras = [c["name"] for c in api.get("/cameras").json()["cameras"]]
        learning_after_s = None
        if args.learner:
            log = open(work / "learner.log", "wb")  # noqa: SIM115 - lives as long as the child
            learner = subprocess.Popen(
                [sys.executable, "-m", "learner.cli", "run", "--config", str(d.config_path), "--server", d.url,
                 "--token", d.token, "--state", "--quiet"],
                cwd=ROOT, env=child_environment(LEARNER_THREADS), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=lambda: os.nice(LEARNER_NICENESS))
            learning_after_s = round(_wait_learning(api, learner, 300), 1)
            print(f"learner updating after {learning_after_s} s")
        client_json = work / "clients.json"
        clients = subprocess.Popen(
            [sys.executable, __file__, "--clients", d.url, "--token", d.token, "--result", str(client_json),
             "--seconds", str(args.seconds), "--viewers", str(args.viewers), "--ws", str(args.ws),
             "--viewer-fps", str(args.viewer_fps), "--ws-interval", str(args.ws_interval),
             "--cameras", ",".join(cameras)],
            cwd=ROOT, env=child_environment(), stdout=subprocess.PIPE, text=True, start_new_session=True)
        line = clients.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"the client process did not start: {line!r}")
        # The load window starts now: counters and CPU times are differenced from here.
        t0 = time.monotonic()
        tick0 = api.get("/status").json()["tick"]
        pids = {"daemon": d.proc.pid, "clients": clients.pid}
        if learner is not None:
            pids["learner"] = learner.pid
        cpu0 = {n: _group_cpu_s(p) for n, p in pids.items()}
        me0 = os.times()
        poller = Poller(d.url, d.token, args.poll_interval)
        poller.start()
        p99_trace, load_trace = [], []
        while time.monotonic() - t0 < args.seconds:
            time.sleep(min(10.0, max(0.0, args.seconds - (time.monotonic() - t0))))
            p99_trace.append(api.get("/status").json()["tick"]["period_error_ms_p99"])
            load_trace.append(round(os.getloadavg()[0], 2))  # the box is shared: how busy it was meanwhile
        wall = time.monotonic() - t0
        st = api.get("/status").json()
        tick1 = st["tick"]
        cpu1 = {n: _group_cpu_s(p) for n, p in pids.items()}
        realtime_threads = _realtime_threads(d.proc.pid)
        me1 = os.times()
        poller.stop.set()
        poller.join(15)
        clients.wait(60)
        client_out = json.loads(client_json.read_text())

        load_ticks = tick1["ticks"] - tick0["ticks"]
        window = Window().values.maxlen or 0
        in_window = min(tick1["ticks"], window)
        cpu = {n: {"pct_of_one_core": round(100 * sum(c - cpu0[n].get(p, 0.0) for p, c in cpu1[n].items()) / wall, 1),
                   "processes": len(cpu1[n])} for n in pids}
        cpu["bench_poller"] = {"pct_of_one_core": round(100 * ((me1.user + me1.system) - (me0.user + me0.system)) / wall, 1),
                               "processes": 1}
        v_rates = [v["per_s"] for v in client_out["viewers"]]
        w_rates = [w["per_s"] for w in client_out["ws"]]
        lr = (st.get("learner") or {}).get("metrics") or {}
        result = {
            "settings": {"seconds": args.seconds, "viewers": args.viewers, "ws_clients": args.ws,
                         "learner": args.learner, "viewer_fps_requested": args.viewer_fps,
                         "ws_interval_s": args.ws_interval, "poll_interval_s": args.poll_interval,
                         "poll_routes": POLL_ROUTES, "cameras": cameras,
                         "learner_niceness": LEARNER_NICENESS if args.learner else None,
                         "learner_threads": LEARNER_THREADS if args.learner else None,
                         "daemon_niceness": os.getpriority(os.PRIO_PROCESS, 0),
                         "control_realtime_priority": args.realtime_priority,
                         "daemon_realtime_threads": realtime_threads},
            "machine": machine,
            "window_s": round(wall, 1),
            "tick": {
                "load_ticks": load_ticks,
                **{k: tick1[k] - tick0[k] for k in ("late", "skipped", "overruns", "stale_frames")},
                # The daemon's percentiles cover its last `window` ticks; say how many predate the load.
                "percentile_window_ticks": in_window,
                "percentile_window_ticks_before_load": max(0, in_window - load_ticks),
                **{k: tick1[k] for k in ("period_error_ms_p50", "period_error_ms_p99", "period_error_ms_max",
                                         "work_ms_p50", "work_ms_p99", "frame_age_ms_p99")},
                "period_error_ms_p99_every_10s": p99_trace,
            },
            "viewers": {"fps_min": min(v_rates, default=0), "fps_mean": round(float(np.mean(v_rates)), 3) if v_rates else 0,
                        "fps_max": max(v_rates, default=0), "errors": [v["error"] for v in client_out["viewers"] if v["error"]],
                        "per_viewer": client_out["viewers"]},
            "ws": {"msgs_per_s_min": min(w_rates, default=0),
                   "msgs_per_s_mean": round(float(np.mean(w_rates)), 3) if w_rates else 0,
                   "msgs_per_s_total": round(sum(w_rates), 2),
                   "errors": [w["error"] for w in client_out["ws"] if w["error"]], "per_client": client_out["ws"]},
            "api_latency": poller.summary(),
            "cpu": cpu,
            "learner": {"learning_after_s": learning_after_s, "updates_at_end": lr.get("updates"),
                        "policies_active": {k: (v or {}).get("version") for k, v in (st.get("policies") or {}).items()
                                            if k in ("forward", "backward")}},
            "loadavg_1m_every_10s": load_trace,
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        }
    finally:
        if clients is not None and clients.poll() is None:
            os.killpg(clients.pid, signal.SIGKILL)
            clients.wait(10)
        if learner is not None:
            _stop_group(learner)
        stop_daemon(d)
    return result


def _print(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    t, s = result["tick"], result["settings"]
    con = Console()
    con.print(f"{s['viewers']} MJPEG viewers + {s['ws_clients']} telemetry WebSockets"
              f"{' + learner' if s['learner'] else ''}, {result['window_s']} s, "
              f"{result['machine']['cpu_count']} CPUs, load before {result['machine']['loadavg_before']}, "
              f"during (1 min, every 10 s) {result['loadavg_1m_every_10s']}, "
              f"control thread SCHED_FIFO {s['control_realtime_priority'] or 'off'}")
    tab = Table(title="control loop over the load window")
    for col in ("ticks", "late", "skipped", "overruns", "stale", "err p50", "err p99", "err max", "work p99"):
        tab.add_column(col, justify="right")
    tab.add_row(str(t["load_ticks"]), str(t["late"]), str(t["skipped"]), str(t["overruns"]), str(t["stale_frames"]),
                f"{t['period_error_ms_p50']:.3f}", f"{t['period_error_ms_p99']:.3f}", f"{t['period_error_ms_max']:.2f}",
                f"{t['work_ms_p99']:.2f}")
    con.print(tab)
    v, w = result["viewers"], result["ws"]
    con.print(f"viewer frames/s min {v['fps_min']} mean {v['fps_mean']} max {v['fps_max']} "
              f"(asked {s['viewer_fps_requested']:g}), errors {len(v['errors'])}; "
              f"WebSocket msgs/s per client min {w['msgs_per_s_min']} mean {w['msgs_per_s_mean']}, errors {len(w['errors'])}")
    lat = Table(title="API latency (one poller, one request at a time)")
    for col in ("route", "n", "p50 ms", "p99 ms", "max ms", "failures"):
        lat.add_column(col, justify="right")
    for route, r in result["api_latency"].items():
        lat.add_row(route, str(r["n"]), f"{r['p50_ms']:.1f}", f"{r['p99_ms']:.1f}", f"{r['max_ms']:.1f}", str(r["failures"]))
    con.print(lat)
    con.print("CPU, % of one core: " + ", ".join(f"{n} {c['pct_of_one_core']}" for n, c in result["cpu"].items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=180.0, help="length of the load window")
    ap.add_argument("--viewers", type=int, default=20, help="MJPEG stream viewers")
    ap.add_argument("--ws", type=int, default=20, help="telemetry WebSocket clients")
    ap.add_argument("--with-learner", dest="learner", action="store_true", default=True)
    ap.add_argument("--no-learner", dest="learner", action="store_false")
    ap.add_argument("--viewer-fps", type=float, default=10.0, help="fps each viewer asks the stream for")
    ap.add_argument("--ws-interval", type=float, default=0.25, help="telemetry interval each client asks for (s)")
    ap.add_argument("--poll-interval", type=float, default=0.1, help="pause between the poller's requests (s)")
    ap.add_argument("--realtime-priority", type=int, default=0, choices=range(0, 100), metavar="0-99",
                    help="control.realtime_priority for the daemon (SCHED_FIFO control thread; 0: off, as shipped)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "load.json"))
    # The client process: this file run again by the parent.
    ap.add_argument("--clients", metavar="URL", help=argparse.SUPPRESS)
    ap.add_argument("--token", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--cameras", default="wrist,front", help=argparse.SUPPRESS)
    args = ap.parse_args()
    for name in ("seconds", "viewer_fps", "ws_interval", "poll_interval"):
        if getattr(args, name) <= 0:
            ap.error(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    for name in ("viewers", "ws"):
        if getattr(args, name) < 0:
            ap.error(f"--{name} must be >= 0, got {getattr(args, name)}")
    if args.clients:
        run_clients(args)
        return
    result = run_load(args)
    _print(result)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
