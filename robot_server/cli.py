"""`robot-server`: run the daemon, record sim demonstrations, calibrate."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from enum import StrEnum
from pathlib import Path

import typer

from spec.config import Config, ConfigError, is_loopback, load_config, resolve_config_path

app = typer.Typer(add_completion=False, no_args_is_help=True, help="The Franka practice robot server.")
from calibration.cli import app as calibrate_app  # noqa: E402 (sub-app mounted after `app`)

app.add_typer(calibrate_app, name="calibrate")
log = logging.getLogger("robot_server")


class PolicyChoice(StrEnum):
    learned = "learned"
    random = "random"
    hold = "hold"


class DirectionChoice(StrEnum):
    forward = "forward"
    backward = "backward"


def _load(config: Path) -> Config:
    try:
        return load_config(config)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _fail(msg: str, code: int = 1) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def _env_defaults() -> None:
    # Offscreen MuJoCo rendering on machines without a display.
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
    # Python's default 5 ms GIL switch interval would add that much jitter to the tick.
    sys.setswitchinterval(0.001)


@app.command()
def run(
    config: Path = typer.Option(Path("sim"), "--config", "-c", help="a YAML file, or a packaged config: sim, franka"),
    policy: PolicyChoice | None = typer.Option(
        None, help="start a practice session at once with this policy (default: wait for the operator)"
    ),
    max_steps: int | None = typer.Option(None, min=1, help="stop after this many recorded steps"),
    api: bool = typer.Option(True, help="serve the operator API and page"),
    port: int | None = typer.Option(None, min=0, max=65535, help="override server.port"),
    inject: list[str] = typer.Option(
        [], "--inject", metavar="KIND@START[/EVERY]",
        help="rehearse a device fault (the sim, or franka-sim: franky with arm.host on loopback; repeatable): "
        "KIND (camera_stop, reflex, gripper_stuck, spacemouse_unplug, takeover) START seconds after the loop "
        "starts, then every EVERY seconds; GET /faults shows each with its detection and recovery",
    ),
) -> None:
    """Run the 10 Hz control daemon (and the operator API at http://host:port/)."""
    _env_defaults()
    from robot_server.daemon import Daemon, check_port_free, setup_logging
    from robot_server.fault_injection import InjectSpec, InjectSpecError, check_allowed
    from robot_server.session import SessionParams

    try:
        specs = [InjectSpec.parse(text) for text in inject]
    except InjectSpecError as exc:
        _fail(str(exc), code=2)
    cfg = _load(config)
    if specs:
        try:
            check_allowed(cfg)
        except InjectSpecError as exc:
            _fail(str(exc), code=2)
    setup_logging()
    if port is not None:
        cfg.server.port = port
    if api:
        try:
            check_port_free(cfg.server.host, cfg.server.port)
        except RuntimeError as exc:
            _fail(str(exc))
    if max_steps is not None and policy is None:
        policy = PolicyChoice.learned
    try:
        daemon = Daemon(cfg, config_path=resolve_config_path(config), inject=specs)
    except Exception as exc:
        _fail(f"could not start: {exc}")
    server = None
    try:
        daemon.start()
        if policy is not None:
            daemon.loop.submit(lambda s: s.start_session(SessionParams(policy=policy.value, max_steps=max_steps)))
        if api:
            server = _make_server(daemon)
        _run_until_done(daemon, server, stop_when_session_ends=max_steps is not None)
    finally:
        daemon.stop()
    if daemon.loop.crashed is not None:
        _fail(f"the control loop crashed: {daemon.loop.crashed}")


def _make_server(daemon):
    import uvicorn

    from robot_server.api.app import create_app

    cfg = daemon.cfg
    server = cfg.server
    if not server.reads_need_token:
        where = "on loopback" if is_loopback(server.host) else f"on {server.host}, as server.read_access says"
        log.log(logging.INFO if is_loopback(server.host) else logging.WARNING,
                "reads (status, cameras, episodes, telemetry) are open without the token %s", where)
    # Every connection has a time limit, so a learner or browser that vanishes (a network cut, a
    # killed process) never holds the server: idle keep-alive connections close after 5 s, a
    # WebSocket whose client stops answering pings closes after 20 + 20 s, a checkpoint upload that
    # stalls gets 408 (server.body_timeout_s), and a stop waits at most 5 s for open requests and
    # streams (MJPEG) before closing them. WebSocket messages go uncompressed: deflating each
    # telemetry message for each client cost the event loop (and so the tick) GIL time for a few
    # kB a second per client.
    ucfg = uvicorn.Config(
        create_app(daemon), host=server.host, port=server.port, log_level="warning", lifespan="on",
        timeout_keep_alive=5, ws_ping_interval=20.0, ws_ping_timeout=20.0, timeout_graceful_shutdown=5,
        ws_per_message_deflate=False,
    )
    return uvicorn.Server(ucfg)


def _run_until_done(daemon, server, stop_when_session_ends: bool) -> None:
    """Serve until Ctrl-C / SIGTERM, or until the requested session ends."""

    def watch() -> None:
        while True:
            time.sleep(0.1)
            ended = stop_when_session_ends and daemon.supervisor.finished_sessions > 0
            if ended or not daemon.loop.running:
                if server is not None:
                    server.should_exit = True
                else:
                    stop.set()
                return

    stop = threading.Event()
    threading.Thread(target=watch, name="session-watch", daemon=True).start()
    import signal

    if server is not None:
        # uvicorn shuts down on SIGTERM and then re-raises it with the handler it found; with the
        # default one that would kill the process before daemon.stop() closes the store.
        signal.signal(signal.SIGTERM, lambda *_: None)
        server.run()  # handles SIGINT/SIGTERM itself
        return

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.2):
        pass


@app.command()
def demos(
    config: Path = typer.Option(Path("sim"), "--config", "-c", help="a YAML file, or a packaged config: sim"),
    direction: DirectionChoice = typer.Option(..., help="forward (do the task) or backward (undo it)"),
    count: int = typer.Option(20, min=1, max=10_000, help="successful demonstrations to record"),
    max_steps: int = typer.Option(200, min=10, max=10_000, help="steps per demonstration at most"),
    top_up: bool = typer.Option(
        False, "--top-up", help="COUNT is how many the store should hold: record only the successful ones it lacks"
    ),
) -> None:
    """Record scripted-expert demonstrations in the sim world into the store (as demo segments)."""
    _env_defaults()
    from rich.progress import Progress

    from robot_server.daemon import Daemon, setup_logging
    from robot_server.demo import successful_demos

    setup_logging(logging.WARNING)
    cfg = _load(config)
    if top_up:
        # A deployment starts this on every `up`: a store that already has its demos is left alone.
        have = successful_demos(cfg.store)[direction.value]
        if have >= count:
            typer.echo(f"{have} successful {direction.value} demos already in {cfg.store.path}")
            return
        count -= have
    cfg.control.status_line = False
    try:
        daemon = Daemon(cfg)
    except Exception as exc:
        _fail(f"could not start: {exc}")
    if daemon.devices.expert is None:
        daemon.stop()
        _fail("the scripted expert exists only in the sim world (arm.backend: sim); record demos by teleop")
    ok = attempts = 0
    try:
        daemon.start()
        with Progress() as progress:
            bar = progress.add_task(f"{direction.value} demos", total=count)
            while ok < count and attempts < 3 * count:
                attempts += 1
                before = daemon.supervisor.counters.demos_recorded
                daemon.loop.submit(lambda s: s.start_demo(direction.value, "expert", max_steps))
                deadline = time.monotonic() + max_steps / cfg.control.rate_hz * 3 + 60
                while daemon.supervisor.counters.demos_recorded == before:
                    if time.monotonic() > deadline or not daemon.loop.running:
                        _fail("a demonstration did not finish in time")
                    time.sleep(0.05)
                last = daemon.supervisor.last_demo or {}
                if last.get("success"):
                    ok += 1
                    progress.advance(bar)
    finally:
        daemon.stop()
    typer.echo(f"recorded {attempts} {direction.value} demos, {ok} successful, into {cfg.store.path}")
    if ok < count:
        raise typer.Exit(1)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
