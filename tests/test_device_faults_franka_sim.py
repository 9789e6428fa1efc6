"""Device faults on franka-sim (issue 12, item 3): the faults of tests/test_device_faults.py, injected
the way `robot-server run --inject` does, into a daemon whose arm is franky (the real libfranka code
path: arm.franky_driver, its gripper thread and recovery state machine) against franka-sim, with the
sim cameras mirroring its joints. Each is detected, counted in /status and GET /faults, and
recovered or escalated as a help request, with the loop ticking on and no crash.

One franka-sim and one daemon for the module. The server enforces the communication constraints:
the injected reflex is a real one (the daemon's process is paused, libfranka misses its cycles and
franka-sim aborts the motion with communication_constraints_violation). On a loaded 2-core box the
enforced server adds reflexes of its own (one came each time practice reset the sim cameras: the
render process starting starves libfranka's thread), so recovery.max_failures is high and reflex
counts are compared with >=.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from device_fault_steps import inject, practise, stop_and_check_store, takeover_moves_without_a_jump
from inproc_daemon import inproc_daemon, wait_until
from typer.testing import CliRunner

from arm.gripper import GripperWorker
from replay.store import ReplayReader
from robot_server.cli import app
from robot_server.fault_injection import (
    FRANKY_READ_TIMEOUT_S,
    GRIPPER_STUCK_S,
    HangingFrankyGripper,
    InjectSpec,
    InjectSpecError,
    check_allowed,
)
from robot_server.faults import FaultKind
from spec.config import ArmConfig, load_config

try:
    from tests.franka_sim import FrankaSimServer, missing_reason
except ImportError:  # pytest put tests/ itself on sys.path (no rootdir on it)
    from franka_sim import FrankaSimServer, missing_reason

pytestmark = pytest.mark.timeout(180)
franka_sim = pytest.mark.franka_sim  # every test but the config check below

NEVER = 1e9  # scheduled far away: the tests inject by hand, at the moment they choose
GRIPPER_HELP_S = 2.0


def test_inject_is_refused_for_a_franky_arm_off_loopback_naming_arm_host():
    for host in ("172.16.0.2", "robot.lab", "::ffff:10.0.0.2"):
        cfg = load_config("franka", env={"ROBOT__ARM__HOST": host})
        with pytest.raises(InjectSpecError) as err:
            check_allowed(cfg)
        assert f"arm.host: {host!r}" in str(err.value) and "loopback" in str(err.value)
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):  # franka-sim's side of the line
        check_allowed(load_config("franka", env={"ROBOT__ARM__HOST": host}))
    check_allowed(load_config("sim", env={}))
    res = CliRunner().invoke(app, ["run", "--no-api", "--config", "franka", "--inject", "reflex@5"],
                             env={"ROBOT__ARM__HOST": "172.16.0.2"})
    assert res.exit_code == 2, res.output
    assert "arm.host: '172.16.0.2'" in res.output and "--inject" in res.output


class DoneFuture:
    def wait(self, timeout: float) -> bool:
        return True

    def get(self) -> bool:
        return True


class FakeFrankyGripper:
    """franky.Gripper as the gripper thread uses it, answering at once."""

    max_width = 0.08

    def __init__(self) -> None:
        self.width = 0.08
        self.sent: list[str] = []

    def grasp_async(self, *args) -> DoneFuture:
        self.sent.append("grasp")
        return DoneFuture()

    def open_async(self, *args) -> DoneFuture:
        self.sent.append("open")
        return DoneFuture()


def test_a_silent_franky_gripper_fails_reads_and_holds_commands_on_the_gripper_thread():
    inner = FakeFrankyGripper()
    gripper = HangingFrankyGripper(inner)
    errors: list[str] = []
    worker = GripperWorker(gripper, ArmConfig(), errors.append)
    worker.start()
    try:
        time.sleep(0.2)
        gripper.hang_for(1.5)
        t0, answered = time.monotonic(), worker.answered_at
        worker.desired_closed = True  # what the control thread does: it returns at once
        time.sleep(0.5)
        assert inner.sent == [] and worker.commanded_closed is True, "the command is held, not lost"
        wait_until(lambda: errors, 2 * FRANKY_READ_TIMEOUT_S, "a read to time out")
        assert "UDP receive: Timeout" in errors[0]
        assert time.monotonic() - t0 >= FRANKY_READ_TIMEOUT_S - 0.05, "the read waited libfranka's timeout"
        assert worker.answered_at == answered, "no answer while silent: the daemon sees the silence"
        wait_until(lambda: inner.sent == ["grasp"], 4, "the held command to go out once the gripper answers")
        assert time.monotonic() - t0 >= 1.5
        wait_until(lambda: worker.answered_at > answered, 3, "answers again")
    finally:
        worker.stop()
        worker.join(3)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    env = {
        "ROBOT__SESSION__STALE_PAUSE_S": "1.0",
        "ROBOT__ARM__GRIPPER_HELP_S": str(GRIPPER_HELP_S),
        "ROBOT__ARM__RECOVERY__MAX_FAILURES": "100",  # a reflex of the loaded box's own never pauses the arm
    }
    specs = [InjectSpec(kind, NEVER) for kind in FaultKind]
    with (
        FrankaSimServer(enforce_comm_constraints=True),
        inproc_daemon("franka", tmp_path_factory.mktemp("faults"), env, inject=specs) as d,
    ):
        assert d.cfg.arm.backend == "franky" and d.injector.arm_backend == "franky"
        homings = d.devices.arm.stats.homings
        d.loop.submit(lambda s: s.go_home())
        wait_until(lambda: d.devices.arm.stats.homings > homings and (d.status().get("arm") or {}).get("mode")
                   == "ready", 30, "the arm at home")
        yield d


@franka_sim
def test_a_stopped_camera_is_detected_reset_and_recovered(daemon):
    d = daemon
    sid = practise(d)
    resets = d.supervisor.counters.stale_camera_resets
    rec = inject(d, FaultKind.CAMERA_STOP, 30)
    assert not rec["escalated"]
    assert d.supervisor.counters.stale_camera_resets == resets + 1, "practice reset the stopped camera"
    assert rec["detected_at"] - rec["injected_at"] < 1.0  # frames older than 2 ticks are rejected
    stop_and_check_store(d, sid)


@franka_sim
def test_an_injected_reflex_is_a_real_one_recovered_by_the_state_machine(daemon):
    d = daemon
    sid = practise(d)
    # Not while the arm is still getting over a reflex of its own (see the module docstring).
    wait_until(lambda: d.status()["arm"]["mode"] == "ready", 10, "the arm ready")
    before = d.devices.arm.stats.as_dict()
    rec = inject(d, FaultKind.REFLEX, 30)
    after = d.devices.arm.stats.as_dict()
    assert after["reflexes"] >= before["reflexes"] + 1 and after["recoveries"] >= before["recoveries"] + 1
    assert after["failed_recoveries"] == before["failed_recoveries"]
    # franka-sim's own error, reported by libfranka through franky: not a message of the injector.
    assert "communication_constraints_violation" in rec["detail"], rec
    assert not rec["escalated"]
    wait_until(lambda: d.status()["arm"]["mode"] == "ready", 10, "the arm back to ready")
    assert d.devices.arm.help_request() is None
    steps = d.status()["session"]["total_steps"]
    wait_until(lambda: d.status()["session"]["total_steps"] > steps + 5, 10, "practice to go on")
    stop_and_check_store(d, sid)
    assert d.status()["faults"]["reflex"]["detected"] >= 1


@franka_sim
def test_a_gripper_that_stops_answering_is_escalated_then_recovered_and_never_holds_the_tick(daemon):
    d = daemon
    sid = practise(d)
    ticks: list[float] = []

    def stamp(loop):
        ticks.append(time.monotonic())

    d.loop.on_tick.append(stamp)
    try:
        t0 = time.monotonic()
        rec = inject(d, FaultKind.GRIPPER_STUCK, 30)  # silent 3 s: past arm.gripper_help_s (2 s)
    finally:
        d.loop.on_tick.remove(stamp)
    assert rec["escalated"], "a gripper silent past arm.gripper_help_s is a help request"
    assert rec["recovered_at"] - rec["injected_at"] > GRIPPER_HELP_S
    # The gripper thread waits FRANKY_READ_TIMEOUT_S per read; the control thread never does.
    gaps = np.diff(ticks)
    assert gaps.max() < FRANKY_READ_TIMEOUT_S, f"the tick waited {gaps.max():.2f} s"
    assert sum(t0 < t < t0 + GRIPPER_STUCK_S for t in ticks) >= 15, "the loop kept ticking while it was silent"
    assert any("UDP receive: Timeout" in e for e in d.devices.arm.stats.errors)
    stored = [e for e in d.supervisor.ctx.events.recent(200) if e.get("source") == "gripper"]
    assert [e["event"] for e in stored][-2:] == ["help_requested", "help_resolved"]
    wait_until(lambda: "gripper" not in [h["source"] for h in d.status()["help_requests"]], 5,
               "the gripper help request to leave the status")
    age = d.status()["arm"]["gripper_age_s"]
    assert age is not None and age < 1.0, "the gripper answers again"
    stop_and_check_store(d, sid)


@franka_sim
def test_a_takeover_starts_from_the_arm_pose_and_the_policy_goes_on(daemon):
    takeover_moves_without_a_jump(daemon)


@franka_sim
def test_a_teleop_device_lost_mid_demo_ends_it_and_asks_for_help(daemon):
    d = daemon
    before = d.supervisor.counters.demos_recorded
    d.loop.submit(lambda s: s.start_demo("forward", "teleop", 600))
    wait_until(lambda: (d.status().get("demo") or {}).get("steps", 0) >= 5, 20, "five demo steps")
    n = len(d.faults.records())
    d.injector.inject(FaultKind.SPACEMOUSE_UNPLUG)
    wait_until(lambda: d.supervisor.counters.demos_recorded > before, 5, "the demo to end")
    assert d.supervisor.last_demo["end_reason"].startswith("teleop device lost")
    st = wait_until(lambda: (st := d.status())["mode"] == "idle" and st, 2, "idle")
    assert [h["source"] for h in st["help_requests"]] == ["teleop"]
    rec = wait_until(lambda: (r := d.faults.records()[n])["recovered_at"] and r, 10, "the device back")
    assert rec["escalated"] and rec["detected_at"] is not None
    wait_until(lambda: d.status()["help_requests"] == [], 5, "the teleop help request to leave the status")
    assert d.recorder.flush(10)
    last = ReplayReader(d.cfg.store.path).episodes()[-1]
    assert last.kind == "demo" and last.closed and last.success is False


@franka_sim
def test_faults_are_counted_and_listed_for_the_operator(daemon):
    from fastapi.testclient import TestClient

    from robot_server.api.app import create_app

    d = daemon
    assert d.loop.running and d.loop.crashed is None
    with TestClient(create_app(d)) as client:
        faults = client.get("/faults").json()
        counts = client.get("/status").json()["faults"]
    # Every kind was injected once above, and the daemon noticed and got over each.
    assert sorted(f["kind"] for f in faults) == sorted(k.value for k in FaultKind)
    assert all(f["detected_at"] is not None and f["recovered_at"] is not None for f in faults), faults
    assert {f["kind"] for f in faults if f["escalated"]} == {"gripper_stuck", "spacemouse_unplug"}
    for kind in FaultKind:
        c = counts[kind.value]
        assert c["injected"] == 1 and c["detected"] >= 1 and c["recovered"] >= 1, (kind, c)
