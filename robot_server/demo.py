"""`make demo`: a whole simulated practice session on this machine.

Starts the sim daemon, records scripted demonstrations if the store has none, starts the learner
(state mode: pixels are too slow to learn from on a CPU in minutes), practises for a few minutes
while printing progress, then stops both, says what was left behind (store, TensorBoard logs) and
writes the morning report of it (`replay report`) into server.reports_dir/demo-<time>/, where
the page's "morning report" link finds it.

    python -m robot_server.demo [--minutes 4] [--config sim] [--pixels]
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import typer

from spec.config import ConfigError, StoreConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# A demo has minutes, not the hours MEDALPP.md's sim schedule assumes: learn after 400 random
# steps instead of 10,000, step the classifiers more often, and push every 100 updates.
DEMO_OVERRIDES = {
    "ROBOT__LEARNER__SEED_STEPS": "400",
    "ROBOT__LEARNER__BATCH_SIZE": "128",
    "ROBOT__LEARNER__PUSH_EVERY": "100",
    "ROBOT__LEARNER__SAVE_EVERY": "500",
    "ROBOT__LEARNER__CLF_FORWARD_EVERY": "200",
    "ROBOT__LEARNER__CLF_BACKWARD_EVERY": "50",
    # The learner trains beside the loop on the same cores: a SCHED_FIFO control thread keeps the
    # tick on time (bench/results/load-quiet*.json). Without the privilege the daemon logs a warning
    # and runs the loop at normal priority.
    "ROBOT__CONTROL__REALTIME_PRIORITY": "50",
}

app = typer.Typer(add_completion=False)


def successful_demos(store: StoreConfig) -> dict[str, int]:
    """Successful demonstrations in the store, per direction (none if it does not exist)."""
    from replay.location import store_location
    from replay.store import ReplayReader

    counts = {"forward": 0, "backward": 0}
    location = store_location(store)  # a directory or s3://bucket/prefix
    if location.attrs() is None:
        return counts
    for e in ReplayReader(location).episodes():
        if e.kind == "demo" and e.success:
            counts[e.direction] += 1
    return counts


def _spawn(args: list[str], log_path: Path, env: dict[str, str], niceness: int = 0) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    out = open(log_path, "ab")  # noqa: SIM115 - lives as long as the child
    return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                            start_new_session=True, preexec_fn=(lambda: os.nice(niceness)) if niceness else None)


# On a 2-core box the learner shares the CPU with the 10 Hz loop and the render process: one
# math thread at the lowest priority, so the control tick always gets a core when it wakes.
LEARNER_NICENESS = 19
LEARNER_THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _stop(proc: subprocess.Popen | None, name: str, timeout: float = 30.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        typer.echo(f"{name} did not stop in {timeout:.0f} s; killing it")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@app.command()
def main(
    minutes: float = typer.Option(4.0, min=0.5, max=24 * 60, help="how long to practise"),
    config: Path = typer.Option(ROOT / "spec" / "configs" / "sim.yaml", help="sim config"),
    demos: int = typer.Option(5, min=1, max=200, help="scripted demos per direction if the store has none"),
    pixels: bool = typer.Option(False, help="learn from pixels (slow on CPU) instead of sim state"),
    eval_episodes: int = typer.Option(5, min=1, max=100, help="eval episodes before and after practice"),
    eval_horizon: int = typer.Option(100, min=10, max=2000, help="steps per eval episode"),
) -> None:
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    for k, v in DEMO_OVERRIDES.items():
        env.setdefault(k, v)
    try:
        cfg = load_config(config, env=env)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    logs = ROOT / "runs" / "demo-logs"
    base = f"http://{cfg.server.host}:{cfg.server.port}"
    headers = {"Authorization": f"Bearer {cfg.server.token}"}
    typer.echo(f"store {cfg.store.path} | learner runs in {cfg.learner.run_dir} | logs in {logs}")

    have = successful_demos(cfg.store)
    for direction in ("forward", "backward"):
        if have[direction] >= demos:
            typer.echo(f"{have[direction]} successful {direction} demos already in the store")
            continue
        typer.echo(f"recording {demos - have[direction]} scripted {direction} demos ...")
        r = subprocess.run(
            [str(BIN / "robot-server"), "demos", "--config", str(config), "--direction", direction,
             "--count", str(demos - have[direction])], env=env, cwd=ROOT, timeout=1800)
        if r.returncode != 0:
            typer.echo(f"error: recording {direction} demos failed (exit {r.returncode})", err=True)
            raise typer.Exit(1)

    daemon = learner = None
    try:
        daemon = _spawn([str(BIN / "robot-server"), "run", "--config", str(config), "--policy", "learned"],
                        logs / "daemon.log", env)
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if daemon.poll() is not None or time.monotonic() > deadline:
                typer.echo(f"error: the daemon did not come up; see {logs / 'daemon.log'}", err=True)
                raise typer.Exit(1)
            time.sleep(0.5)
        typer.echo(f"daemon up: open {base}/ in a browser (token: server.token in {config})")
        largs = [str(BIN / "learner"), "run", "--config", str(config), "--server", base, "--quiet"]
        if not pixels:
            largs.append("--state")
        learner = _spawn(largs, logs / "learner.log", {**env, **LEARNER_THREADS}, niceness=LEARNER_NICENESS)

        end = time.monotonic() + minutes * 60
        first: dict | None = None  # the eval of the first forward policy the learner pushed
        tick_p99: list[float] = []  # the loop's period error p99 (last 3,000 ticks) at each progress line
        tick: dict = {}
        while time.monotonic() < end:
            time.sleep(10)
            if daemon.poll() is not None:
                typer.echo("error: the daemon exited", err=True)
                raise typer.Exit(1)
            if learner.poll() is not None:
                typer.echo(f"error: the learner exited; see {logs / 'learner.log'}", err=True)
                raise typer.Exit(1)
            try:
                st = httpx.get(f"{base}/status", headers=headers, timeout=5).json()
            except httpx.HTTPError as exc:
                typer.echo(f"(status unavailable: {exc})")
                continue
            typer.echo(_progress(st, end - time.monotonic()))
            tick = st.get("tick") or tick
            trained = ((st.get("learner") or {}).get("metrics") or {}).get("updates", 0)
            if "period_error_ms_p99" in tick and trained:  # the daemon's start-up ticks are not the learner's doing
                tick_p99.append(float(tick["period_error_ms_p99"]))
            if first is None and ((st.get("policies") or {}).get("forward") or {}).get("version"):
                first = _evaluate_between_practice(base, headers, eval_episodes, eval_horizon, resume=True)
        last = _evaluate_between_practice(base, headers, eval_episodes, eval_horizon, resume=False)
        _print_success(first, last)
        if tick_p99:
            # The learner runs niced on one thread beside the loop: this says whether the loop kept its budget.
            typer.echo(f"control loop while the learner trained: period error p99 {max(tick_p99):.2f} ms "
                       f"(worst 3,000-tick window), {tick.get('late', 0)} late of {tick.get('ticks', 0)} ticks")
    finally:
        _stop(learner, "learner")
        _stop(daemon, "daemon")
    _summary(cfg)
    # Into server.reports_dir, one folder per session, so the page's "morning report" link serves it.
    reports = cfg.server.reports_dir if cfg.server.reports_dir.is_absolute() else ROOT / cfg.server.reports_dir
    write_report(cfg, config, env, reports / time.strftime("demo-%Y-%m-%d-%H%M%S"))


def _evaluate_between_practice(base: str, headers: dict, episodes: int, horizon: int, resume: bool) -> dict | None:
    """Stop practice, run an eval session (the forward policy's mean action from the start
    distribution, success judged by the sim task), and start practising again if `resume`."""
    try:
        httpx.post(f"{base}/sessions/current/stop", headers=headers, timeout=10)
        r = httpx.post(f"{base}/evals", json={"episodes": episodes, "horizon": horizon}, headers=headers, timeout=10)
        if r.status_code != 201:
            typer.echo(f"(eval not started: {r.status_code} {r.text})")
            return None
        typer.echo(f"evaluating the forward policy: {episodes} episodes of at most {horizon} steps ...")
        deadline = time.monotonic() + episodes * (horizon / 10 + 30) + 60
        while httpx.get(f"{base}/evals/current", headers=headers, timeout=10).status_code == 200:
            if time.monotonic() > deadline:
                httpx.post(f"{base}/evals/current/stop", headers=headers, timeout=10)
                break
            time.sleep(2)
        last = httpx.get(f"{base}/evals/last", headers=headers, timeout=10).json()
    except httpx.HTTPError as exc:
        typer.echo(f"(eval failed: {exc})")
        return None
    finally:
        if resume:
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(f"{base}/sessions", json={"policy": "learned"}, headers=headers, timeout=10)
    results = last.get("results") or []
    done = [r for r in results if r.get("success") is not None]
    out = {
        "versions": sorted({r.get("policy_version") for r in done if r.get("policy_version") is not None}),
        "successes": sum(bool(r["success"]) for r in done),
        "episodes": len(done),
    }
    typer.echo(f"eval: {out['successes']}/{out['episodes']} successful (policy v{out['versions']})")
    return out


def _print_success(first: dict | None, last: dict | None) -> None:
    def fmt(e: dict | None) -> str:
        if not e or not e["episodes"]:
            return "not measured"
        return f"{e['successes']}/{e['episodes']} = {e['successes'] / e['episodes']:.2f} (v{','.join(map(str, e['versions']))})"

    typer.echo(f"forward success, first pushed policy: {fmt(first)}")
    typer.echo(f"forward success, after practice:      {fmt(last)}")


def _progress(st: dict, left_s: float) -> str:
    sess = st.get("session") or {}
    pol = st.get("policies") or {}
    tick = st.get("tick") or {}
    lr = (st.get("learner") or {}).get("metrics") or {}
    v = {d: (pol.get(d) or {}).get("version", "-") for d in ("forward", "backward")}
    line = (
        f"[{left_s / 60:4.1f} min left] step {sess.get('total_steps', 0)} "
        f"{sess.get('direction', '-')} phase {sess.get('phase', '-')} | policies fwd v{v['forward']} "
        f"bwd v{v['backward']} | interventions {st.get('counters', {}).get('interventions', 0)} | "
        f"tick p99 {tick.get('period_error_ms_p99', 0):.2f} ms, late {tick.get('late', 0)}"
    )
    if lr:
        acc = lr.get("clf_forward/fresh_accuracy")
        line += f" | learner updates {int(lr.get('updates', 0))}" + (f", goal clf acc {acc:.2f}" if acc else "")
    return line


REPORT_TIMEOUT_S = 300.0  # ~3 s on an idle box; the learner's classifiers are loaded to score the labels


def write_report(cfg, config: Path, env: dict[str, str], out: Path) -> Path | None:
    """`replay report` of the store and learner run dir this demo used, into `out`; prints where
    index.html is, or why there is none. Never raises: a report that fails does not fail the demo.

    A subprocess: robot_server and replay_tools are side by side on the floor plan (pyproject's
    importlinter layers), so the daemon's package does not import the replay tools."""
    from replay.location import is_s3_url

    if is_s3_url(cfg.store.path):
        typer.echo(f"morning report: not written (the store is {cfg.store.path}; `replay report` reads a local copy)")
        return None
    args = [sys.executable, "-m", "replay_tools.cli", "report", str(cfg.store.path), "-o", str(out),
            "--config", str(config)]
    if (ROOT / cfg.learner.run_dir).is_dir():  # relative paths are relative to ROOT, as for the learner
        args += ["--learner-run", str(cfg.learner.run_dir)]
    try:
        r = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=REPORT_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as exc:
        typer.echo(f"morning report: not written ({type(exc).__name__}: {exc})")
        return None
    lines = r.stdout.strip().splitlines()
    if r.returncode != 0 or not lines:
        # typer draws its usage errors in a box: keep the words, at most the last 400 characters.
        words = " ".join(" ".join(line.strip(" │╭╮╰╯─").split()) for line in (r.stderr or r.stdout).splitlines())
        typer.echo(f"morning report: not written (`replay report` exited {r.returncode}: "
                   f"{words.strip()[-400:] or 'no output'})")
        return None
    for line in lines[:-1]:  # which sections had no data, and why
        typer.echo(f"  {line}")
    index = ROOT / lines[-1]
    typer.echo(f"morning report: {index}")
    return index


def _summary(cfg) -> None:
    from replay.location import store_location
    from replay.store import ReplayReader

    counts: dict[str, int] = {}
    steps = 0
    for e in ReplayReader(store_location(cfg.store)).episodes():
        key = f"{e.kind}/{e.direction}"
        counts[key] = counts.get(key, 0) + 1
        steps += e.length
    typer.echo(f"store {cfg.store.path}: {steps} steps in " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    typer.echo(f"TensorBoard: tensorboard --logdir {cfg.learner.run_dir}")
    typer.echo("replay a segment offline: replay list --config sim")


if __name__ == "__main__":
    app()
