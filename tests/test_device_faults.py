"""Device faults (issue 12, item 3): a camera that stops, a reflex, a gripper that does not answer,
a teleop device lost mid-demo, an operator takeover. Each is injected the way `robot-server run
--inject` does (decorators around the sim's devices), and must be detected, counted, and recovered
or escalated as a help request by the daemon's own paths, with the loop ticking on and every
committed step kept in the store.
"""

from __future__ import annotations

import threading
import time

import pytest
from device_fault_steps import inject, practise, stop_and_check_store, takeover_moves_without_a_jump
from inproc_daemon import sim_daemon, wait_until
from typer.testing import CliRunner

from arm.gripper import GripperWorker
from replay.store import ReplayReader
from robot_server.cli import app
from robot_server.devices import Devices
from robot_server.fault_injection import FaultInjector, InjectSpec, InjectSpecError
from robot_server.faults import FaultKind, FaultLog
from spec.config import ArmConfig, load_config
from spec.step import ActionSpace

NEVER = 1e9  # scheduled far away: the tests inject by hand, at the moment they choose
GRIPPER_HELP_S = 2.0


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    env = {"ROBOT__SESSION__STALE_PAUSE_S": "1.0", "ROBOT__ARM__GRIPPER_HELP_S": str(GRIPPER_HELP_S)}
    specs = [InjectSpec(kind, NEVER) for kind in FaultKind]
    with sim_daemon(tmp_path_factory.mktemp("faults"), env, inject=specs) as d:
        yield d


def test_bad_inject_values_are_refused_by_the_cli_naming_them():
    runner = CliRunner()
    for bad, named in [("bogus@1", "unknown fault kind 'bogus'"), ("reflex", "'reflex'"),
                       ("reflex@soon", "'reflex@soon'"), ("reflex@1/0", "EVERY must be above 0")]:
        res = runner.invoke(app, ["run", "--no-api", "--inject", "camera_stop@1", "--inject", bad])
        assert res.exit_code == 2, res.output
        assert named in res.output and "--inject" in res.output
    # A franky arm away from loopback is a real robot (franka-sim is on loopback: see
    # tests/test_device_faults_franka_sim.py).
    res = runner.invoke(app, ["run", "--no-api", "--config", "franka", "--inject", "reflex@5"],
                        env={"ROBOT__ARM__HOST": "172.16.0.2"})
    assert res.exit_code == 2 and "arm.host: '172.16.0.2'" in res.output, res.output
    assert InjectSpec.parse("gripper_stuck@2.5/60") == InjectSpec(FaultKind.GRIPPER_STUCK, 2.5, 60.0)
    with pytest.raises(InjectSpecError, match="takeover@-1"):
        InjectSpec.parse("takeover@-1")


def test_scheduled_injections_fire_at_start_then_every():
    faults = FaultLog()
    injector = FaultInjector([InjectSpec(FaultKind.TAKEOVER, 0.2, 0.5)], faults,
                             ActionSpace(load_config("sim", env={}).action, load_config("sim", env={}).workspace))
    teleops = injector.wrap(Devices(arm=None, cameras={}), [])  # type: ignore[arg-type]
    assert [t.name for t in teleops] == ["operator"]
    injector.start()
    try:
        time.sleep(1.0)
    finally:
        injector.stop()
    times = [r["injected_at"] for r in faults.records()]
    assert len(times) == 2 and 0.4 < times[1] - times[0] < 0.6  # at 0.2 s and 0.7 s
    assert faults.counts()["takeover"]["injected"] == 2


def test_a_stopped_camera_is_detected_reset_and_recovered(daemon):
    d = daemon
    sid = practise(d)
    resets = d.supervisor.counters.stale_camera_resets
    rec = inject(d, FaultKind.CAMERA_STOP, 30)
    assert not rec["escalated"]
    assert d.supervisor.counters.stale_camera_resets == resets + 1, "practice reset the stopped camera"
    assert rec["detected_at"] - rec["injected_at"] < 1.0  # frames older than 2 ticks are rejected
    stop_and_check_store(d, sid)


def test_a_reflex_mid_phase_is_recovered_by_the_arm(daemon):
    d = daemon
    sid = practise(d)
    before = d.devices.arm.stats.as_dict()
    rec = inject(d, FaultKind.REFLEX, 15)
    after = d.devices.arm.stats.as_dict()
    assert after["reflexes"] == before["reflexes"] + 1 and after["recoveries"] == before["recoveries"] + 1
    assert "injected reflex" in rec["detail"] and not rec["escalated"]
    wait_until(lambda: (d.status().get("session") or {}).get("total_steps", 0) > 0 and d.status()["arm"]["mode"]
               == "ready", 5, "the arm back to ready")
    steps = d.status()["session"]["total_steps"]
    wait_until(lambda: d.status()["session"]["total_steps"] > steps + 5, 10, "practice to go on")
    stop_and_check_store(d, sid)
    assert d.status()["faults"]["reflex"]["detected"] >= 1


def test_a_gripper_that_stops_answering_is_escalated_then_recovered(daemon):
    d = daemon
    sid = practise(d)
    rec = inject(d, FaultKind.GRIPPER_STUCK, 20)  # silent 3 s: past arm.gripper_help_s (2 s)
    assert rec["escalated"], "a gripper silent past arm.gripper_help_s is a help request"
    assert rec["recovered_at"] - rec["injected_at"] > GRIPPER_HELP_S
    stored = [e for e in d.supervisor.ctx.events.recent(200) if e.get("source") == "gripper"]
    assert [e["event"] for e in stored][-2:] == ["help_requested", "help_resolved"]
    # The status snapshot is the next tick's: it shows the resolution a tick later on a busy machine.
    wait_until(lambda: "gripper" not in [h["source"] for h in d.status()["help_requests"]], 5,
               "the gripper help request to leave the status")
    stop_and_check_store(d, sid)


def test_a_takeover_starts_from_the_arm_pose_and_the_policy_goes_on(daemon):
    takeover_moves_without_a_jump(daemon)


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
    # The status snapshot is the next tick's: it drops the help request a tick later on a busy machine.
    wait_until(lambda: d.status()["help_requests"] == [], 5, "the teleop help request to leave the status")
    assert d.recorder.flush(10)
    last = ReplayReader(d.cfg.store.path).episodes()[-1]
    assert last.kind == "demo" and last.closed and last.success is False


def test_faults_are_listed_for_the_operator(daemon):
    from fastapi.testclient import TestClient

    from robot_server.api.app import create_app

    sid = practise(daemon)  # a takeover is of the policy: practice (or eval) must run
    inject(daemon, FaultKind.TAKEOVER, 15)
    stop_and_check_store(daemon, sid)
    with TestClient(create_app(daemon)) as client:
        faults = client.get("/faults").json()
        counts = client.get("/status").json()["faults"]
    assert faults[-1]["kind"] == "takeover"
    assert set(faults[0]) == {"kind", "injected_at", "detected_at", "recovered_at", "escalated", "detail"}
    assert all(f["detected_at"] is not None and f["recovered_at"] is not None for f in faults)
    for kind in FaultKind:
        assert counts[kind.value]["injected"] == sum(f["kind"] == kind.value for f in faults)
        assert counts[kind.value]["detected"] >= counts[kind.value]["injected"]


class BlockingGripper:
    """A franky gripper whose reads hang until released (a gripper that stopped answering)."""

    max_width = 0.08

    def __init__(self) -> None:
        self.release = threading.Event()
        self.release.set()
        self.calls = 0

    @property
    def width(self) -> float:
        self.calls += 1
        self.release.wait()
        return 0.05

    def grasp_async(self, *args):
        raise AssertionError("not reached while hung")


def test_a_hung_franky_gripper_never_blocks_the_control_thread():
    gripper = BlockingGripper()
    errors: list[str] = []
    worker = GripperWorker(gripper, ArmConfig(), errors.append)
    worker.start()
    try:
        wait_until(lambda: gripper.calls >= 2, 2, "the worker polling")
        gripper.release.clear()  # the gripper hangs from its next read on
        time.sleep(0.2)
        answered = worker.answered_at
        t0 = time.perf_counter()
        for _ in range(100):  # what the control thread does with the gripper each tick
            worker.desired_closed = True
            _ = worker.width, worker.answered_at
        assert time.perf_counter() - t0 < 0.01
        time.sleep(0.3)
        assert worker.answered_at == answered, "no answer while hung: the daemon sees the silence"
        gripper.release.set()
        wait_until(lambda: worker.answered_at > answered, 2, "answers again")
    finally:
        gripper.release.set()
        worker.stop()
        worker.join(2)
