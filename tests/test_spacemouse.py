"""SpaceMouse and keyboard teleop: report decoding, scaling, sign conventions, button events, the
reader thread fed through a FIFO standing in for /dev/hidrawN, unplug and reconnect."""

from __future__ import annotations

import contextlib
import errno
import os
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from robot_server.teleop import KeyboardTeleop, SpaceMouseReader, Teleop
from robot_server.teleop.hid import HidReport, ReportError, decode_report, encode_report, find_spacemice
from robot_server.teleop.mapping import normalise_axes, pressed_bits
from spec.config import ActionConfig, SpaceMouseConfig, WorkspaceConfig
from spec.step import ActionSpace


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def space(yaw: bool = False) -> ActionSpace:
    return ActionSpace(ActionConfig(yaw=yaw), WorkspaceConfig())


def six_axis(tx: int = 0, ty: int = 0, tz: int = 0, rx: int = 0, ry: int = 0, rz: int = 0) -> bytes:
    return encode_report(1, (tx, ty, tz, rx, ry, rz))


def wait_until(pred: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.001)
    return pred()


# --- decoding ---------------------------------------------------------------------------------


def test_decode_six_axis_report_with_negative_values() -> None:
    data = bytes([1]) + struct.pack("<6h", 350, -350, 12, -1, 0, -32768)
    assert decode_report(data) == HidReport(translation=(350, -350, 12), rotation=(-1, 0, -32768))
    # hidraw may pad; only the first 12 data bytes count
    assert decode_report(data + b"\x00\x00").translation == (350, -350, 12)


def test_decode_older_split_reports() -> None:
    assert decode_report(encode_report(1, (-5, 6, -7))) == HidReport(translation=(-5, 6, -7))
    assert decode_report(encode_report(2, (100, -200, 300))) == HidReport(rotation=(100, -200, 300))


def test_decode_buttons_and_other_reports() -> None:
    assert decode_report(encode_report(3, buttons=0b10)).buttons == 2
    assert decode_report(bytes([3, 0x01])).buttons == 1  # one-byte masks on small models
    assert decode_report(bytes([3, 0x00, 0x80, 0x01])).buttons == 0x018000
    assert decode_report(bytes([0x17, 0x55])) is None  # battery level: no input


@pytest.mark.parametrize(
    "bad, why",
    [
        (b"", "empty"),
        (bytes([1, 1, 2, 3]), "report id 1 has 3 data bytes"),
        (bytes([2, 0, 0]), "report id 2 has 2 data bytes"),
        (bytes([3]), "no data bytes"),
        ("0102", "must be bytes"),
        (None, "must be bytes"),
    ],
)
def test_decode_rejects_malformed_reports(bad: object, why: str) -> None:
    with pytest.raises(ReportError, match=why):
        decode_report(bad)  # type: ignore[arg-type]


# --- scaling and mapping ----------------------------------------------------------------------


def test_deadzone_full_scale_and_scale() -> None:
    out = normalise_axes([0, 20, -28, 175, 350, -700], full_scale=350, deadzone=0.1, scale=[1] * 6)
    assert out[0] == 0.0 and out[1] == 0.0  # 20/350 = 0.057 is inside the dead zone
    assert out[2] == 0.0  # -0.08, still inside
    assert out[3] == pytest.approx((0.5 - 0.1) / 0.9)  # cut, not masked: continuous at the edge
    assert out[4] == pytest.approx(1.0) and out[5] == pytest.approx(-1.0)  # clipped at full scale
    flipped = normalise_axes([175, 175, 0, 0, 0, 0], 350, 0.1, [-1, 0.5, 1, 1, 1, 1])
    assert flipped[0] == pytest.approx(-(0.4 / 0.9)) and flipped[1] == pytest.approx(0.5 * 0.4 / 0.9)
    edge = normalise_axes([36, 0, 0, 0, 0, 0], 350, 0.1, [1] * 6)[0]
    assert 0 < edge < 0.01


def test_mapping_signs_for_a_user_facing_the_robot() -> None:
    sp = space(yaw=True)
    r = SpaceMouseReader(SpaceMouseConfig(deadzone=0.0), sp, clock=Clock())

    def act(**axes: int) -> np.ndarray:
        r.handle_report(six_axis(**axes))
        return r.action()

    a = act(ty=-350)  # push the cap away from you
    assert a[0] < -0.99 and abs(a[1]) < 1e-6 and abs(a[2]) < 1e-6
    assert act(tx=350)[1] > 0.99  # push right -> robot +y (the user's right)
    assert act(tz=-350)[2] > 0.99  # lift -> up
    assert act(rz=-350)[3] > 0.99  # twist anticlockwise seen from above -> +yaw
    assert np.allclose(act(rx=350, ry=350)[:4], 0.0)  # tilts are not mapped
    a = act(tx=350, ty=-350)  # diagonal: norm-clipped to one step
    assert np.linalg.norm(a[:3]) == pytest.approx(1.0) and a[0] < 0 < a[1]
    assert a[-1] == -1.0  # gripper open until toggled
    # no yaw in the action space: 4 values, twisting does nothing
    r4 = SpaceMouseReader(SpaceMouseConfig(deadzone=0.0), space(yaw=False), clock=Clock())
    r4.handle_report(six_axis(rz=-350))
    assert r4.action().shape == (4,) and np.allclose(r4.action()[:3], 0.0)
    # scale signs flip a direction (e.g. a user standing behind the robot)
    rf = SpaceMouseReader(SpaceMouseConfig(deadzone=0.0, scale=[-1, -1, 1, 1, 1, 1]), sp, clock=Clock())
    rf.handle_report(six_axis(ty=-350))
    assert rf.action()[0] > 0.99


def test_split_reports_update_their_own_half() -> None:
    r = SpaceMouseReader(SpaceMouseConfig(deadzone=0.0), space(yaw=True), clock=Clock())
    r.handle_report(encode_report(1, (0, -350, 0)))
    r.handle_report(encode_report(2, (0, 0, -350)))
    s = r.state()
    assert s.raw == (0, -350, 0, 0, 0, -350)
    a = r.action()
    assert a[0] < 0 and a[3] > 0.99


def test_button_edges_toggle_gripper_and_demo_once_per_press() -> None:
    assert (
        pressed_bits(0b01, 0b11) == [1]
        and pressed_bits(0b11, 0b01) == []
        and pressed_bits(0, 0b101) == [0, 2]
    )
    clock = Clock()
    r = SpaceMouseReader(SpaceMouseConfig(), space(), clock=clock)
    r.handle_report(encode_report(3, buttons=0b01))  # left down
    r.handle_report(encode_report(3, buttons=0b01))  # still held: no new edge
    assert r.action()[-1] == 1.0  # closed
    r.handle_report(encode_report(3, buttons=0b00))
    r.handle_report(encode_report(3, buttons=0b10))  # right down
    r.handle_report(encode_report(3, buttons=0b11))  # left again while right held
    ev = r.poll_events()
    assert [e.kind for e in ev] == ["gripper_toggle", "demo_toggle", "gripper_toggle"]
    assert all(e.source == "spacemouse" for e in ev)
    assert r.poll_events() == []  # drained
    assert r.action()[-1] == -1.0  # toggled back open
    r.sync_gripper(True)
    assert r.action()[-1] == 1.0


def test_is_active_holds_for_takeover_release_s() -> None:
    clock = Clock()
    r = SpaceMouseReader(SpaceMouseConfig(takeover_release_s=1.0, deadzone=0.1), space(), clock=clock)
    assert not r.is_active()
    r.handle_report(six_axis(tx=20))  # inside the dead zone: not a takeover
    assert not r.is_active()
    r.handle_report(six_axis(tx=200))
    assert r.is_active()
    r.handle_report(six_axis())
    clock.t += 0.9
    assert r.is_active() and np.allclose(r.action()[:3], 0.0)  # holds still, keeps control
    clock.t += 0.2
    assert not r.is_active()
    r.handle_report(encode_report(3, buttons=0b10))
    assert r.is_active()  # a held button counts
    r.handle_report(encode_report(3, buttons=0))
    clock.t += 1.1
    assert not r.is_active()


def test_bad_reports_are_counted_not_raised() -> None:
    r = SpaceMouseReader(SpaceMouseConfig(), space(), clock=Clock())
    assert r.handle_report(b"\x01\x02") is False
    assert r.handle_report(b"") is False
    assert r.status()["bad_reports"] == 2 and r.status()["reports"] == 0


def test_teleops_satisfy_the_protocol() -> None:
    assert isinstance(SpaceMouseReader(SpaceMouseConfig(), space()), Teleop)
    assert isinstance(KeyboardTeleop(space()), Teleop)


# --- discovery --------------------------------------------------------------------------------


def fake_sysfs(root: Path, nodes: dict[str, str]) -> Path:
    for name, hid_id in nodes.items():
        d = root / "sys" / name / "device"
        d.mkdir(parents=True)
        (d / "uevent").write_text(f"DRIVER=hid-generic\nHID_ID={hid_id}\nHID_NAME=Test {name}\n")
    return root / "sys"


def test_find_spacemice_by_vendor_and_product(tmp_path: Path) -> None:
    sysfs = fake_sysfs(
        tmp_path,
        {
            "hidraw0": "0003:0000046D:0000C52B",  # a Logitech receiver: same vendor, not a SpaceMouse
            "hidraw10": "0003:0000256F:0000C635",  # SpaceMouse Compact
            "hidraw2": "0003:0000046D:0000C626",  # SpaceNavigator
            "hidraw3": "0005:0000256F:0000C63A",  # SpaceMouse Wireless over Bluetooth
        },
    )
    found = find_spacemice(sysfs, Path("/dev"))
    assert [d.path for d in found] == ["/dev/hidraw2", "/dev/hidraw3", "/dev/hidraw10"]
    assert found[0].vendor_id == 0x046D and found[0].product_id == 0xC626
    assert find_spacemice(tmp_path / "nothing", Path("/dev")) == []


# --- the reader thread ------------------------------------------------------------------------


class FakeHidraw:
    """The device side of a FIFO that the reader opens as its hidraw path."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def plug(self, timeout: float = 5.0) -> None:
        if not self.path.exists():
            os.mkfifo(self.path)
        deadline = time.monotonic() + timeout
        while True:  # the write end opens once the reader has the read end open
            try:
                self.fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
                return
            except OSError as exc:
                if exc.errno != errno.ENXIO or time.monotonic() > deadline:
                    raise
                time.sleep(0.005)

    def send(self, report: bytes) -> None:
        assert self.fd is not None
        os.write(self.fd, report)

    def unplug(self) -> None:
        # The node disappears, then the reader sees end of file, as on a real unplug.
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


@pytest.fixture
def reader(tmp_path: Path) -> Iterator[tuple[SpaceMouseReader, FakeHidraw]]:
    dev = FakeHidraw(tmp_path / "hidraw7")
    os.mkfifo(dev.path)
    cfg = SpaceMouseConfig(enabled=True, path=str(dev.path), retry_s=0.1, deadzone=0.0, rate_hz=200)
    r = SpaceMouseReader(cfg, space(yaw=True))
    r.start()
    try:
        yield r, dev
    finally:
        r.close()
        dev.unplug()
    assert r._thread is None


def test_reader_thread_applies_every_report_at_over_100_hz(
    reader: tuple[SpaceMouseReader, FakeHidraw],
) -> None:
    r, dev = reader
    dev.plug()
    assert wait_until(lambda: r.status()["state"] == "connected")
    n = 200
    t0 = time.perf_counter()
    for k in range(1, n + 1):
        ty = -((k * 7) % 351)
        dev.send(six_axis(ty=ty, rz=k % 300))
        # One report at a time, as hidraw delivers them: wait until the reader applied it.
        assert wait_until(lambda k=k: r.reports >= k, timeout=2.0), f"report {k} not applied"
        assert r.state().raw[1] == ty and r.state().raw[5] == k % 300
        time.sleep(max(0.0, t0 + k / 200.0 - time.perf_counter()))  # pace like a device, <= 200 Hz
    rate = n / (time.perf_counter() - t0)
    print(
        f"\nspacemouse reader: {n} reports applied one by one at {rate:.0f} Hz "
        f"(reader measured {r.status()['report_rate_hz']} Hz)"
    )
    dev.send(encode_report(3, buttons=0b01))
    assert wait_until(lambda: r.state().buttons == 1)
    assert [e.kind for e in r.poll_events()] == ["gripper_toggle"]
    dev.send(b"\x01\x00")  # garbage from the device: counted, the thread carries on
    assert wait_until(lambda: r.status()["bad_reports"] == 1)
    dev.send(six_axis(tx=350))
    assert wait_until(lambda: r.state().raw[0] == 350)
    assert r._thread is not None and r._thread.is_alive()


def test_unplug_gives_a_clear_status_and_reconnects(reader: tuple[SpaceMouseReader, FakeHidraw]) -> None:
    r, dev = reader
    dev.plug()
    dev.send(six_axis(tx=300))
    assert wait_until(lambda: r.is_active() and r.state().connected)
    dev.unplug()
    assert wait_until(lambda: "does not exist" in str(r.status()["message"]))
    st = r.status()
    assert (
        st["state"] == "searching" and st["message"] == f"spacemouse: not found ({dev.path} does not exist)"
    )
    assert not r.state().connected
    assert np.allclose(r.action()[:3], 0.0)  # nothing held once the device is gone
    dev.plug()  # plugged back in: the reader finds it again within retry_s
    assert wait_until(lambda: r.status()["state"] == "connected")
    dev.send(six_axis(ty=-350))
    assert wait_until(lambda: r.state().raw[1] == -350)
    assert r.action()[0] < -0.99
    assert r.status()["connects"] == 2
    assert r._thread is not None and r._thread.is_alive()


def test_missing_device_is_reported_and_retried(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    sysfs.mkdir()
    cfg = SpaceMouseConfig(enabled=True, retry_s=0.05)
    r = SpaceMouseReader(cfg, space(), sysfs=sysfs, dev=tmp_path)
    r.start()
    try:
        assert wait_until(lambda: r.status()["state"] == "searching")
        assert (
            r.status()["message"] == f"spacemouse: not found (looked for 3Dconnexion on {tmp_path}/hidraw*)"
        )
        assert not r.is_active() and r.action()[-1] == -1.0
        # The device appears (sysfs entry + node): found by vendor/product id on the next retry.
        fake_sysfs(tmp_path, {"hidraw4": "0003:0000256F:0000C635"})
        dev = FakeHidraw(tmp_path / "hidraw4")
        dev.plug()
        assert wait_until(lambda: r.status()["state"] == "connected")
        assert r.status()["device"] == str(tmp_path / "hidraw4")
        dev.send(six_axis(tz=-350))
        assert wait_until(lambda: r.state().raw[2] == -350)
        assert r.action()[2] > 0.99
    finally:
        r.close()
        dev.unplug()


def test_unreadable_device_names_the_permission_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = tmp_path / "hidraw9"
    node.write_bytes(b"")
    real_open = os.open

    def deny(path: str, flags: int, *a: object) -> int:  # what a missing udev rule looks like
        if str(path) == str(node):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *a)

    monkeypatch.setattr("robot_server.teleop.spacemouse.os.open", deny)
    r = SpaceMouseReader(SpaceMouseConfig(enabled=True, path=str(node), retry_s=0.05), space())
    r.start()
    try:
        assert wait_until(lambda: r.status()["state"] == "error")
        msg = str(r.status()["message"])
        assert msg.startswith(f"spacemouse: cannot open {node}: permission denied") and "udev" in msg
        assert r._thread is not None and r._thread.is_alive()  # still retrying
    finally:
        r.close()


def test_disabled_spacemouse_never_starts() -> None:
    r = SpaceMouseReader(SpaceMouseConfig(enabled=False), space())
    r.start()
    assert r._thread is None and r.status()["message"] == "spacemouse: disabled"
    r.close()
    assert r.status()["state"] == "disabled"


def test_close_stops_the_thread_promptly(tmp_path: Path) -> None:
    r = SpaceMouseReader(SpaceMouseConfig(enabled=True, path=str(tmp_path / "none"), retry_s=5.0), space())
    r.start()
    assert wait_until(lambda: r.status()["state"] == "searching")
    t = time.monotonic()
    r.close()
    assert time.monotonic() - t < 2.0 and r._thread is None


# --- keyboard ---------------------------------------------------------------------------------


def test_keyboard_axes_expire_so_a_lost_keyup_stops_the_arm() -> None:
    clock = Clock()
    kb = KeyboardTeleop(space(yaw=True), hold_s=0.3, takeover_release_s=1.0, speed=0.5, clock=clock)
    assert not kb.is_active()
    kb.set(x=1.0, yaw=-1.0)
    a = kb.action()
    assert a[0] == pytest.approx(0.5) and a[3] == pytest.approx(-0.5) and kb.is_active()
    clock.t += 0.29
    assert kb.action()[0] == pytest.approx(0.5)
    clock.t += 0.02  # no repeat within hold_s: the key is treated as released
    assert np.allclose(kb.action()[:4], 0.0)
    assert kb.is_active()  # still in control, holding still, until the release time passes
    clock.t += 1.0
    assert not kb.is_active()
    kb.set(y=-1.0, hold_s=1.5)  # the page may ask for a longer hold
    clock.t += 1.4
    assert kb.action()[1] == pytest.approx(-0.5)
    assert kb.status()["held"]["y"] == -1.0


def test_keyboard_gripper_and_demo_events_and_bad_input() -> None:
    clock = Clock()
    kb = KeyboardTeleop(space(), clock=clock)
    kb.set(gripper="close")
    assert kb.is_active() and kb.action()[-1] == 1.0
    kb.set(gripper="close")  # unchanged: no second event
    kb.toggle_demo()
    assert [e.kind for e in kb.poll_events()] == ["gripper_toggle", "demo_toggle"]
    assert kb.action().shape == (4,)
    with pytest.raises(ValueError, match="x=2"):
        kb.set(x=2.0)
    with pytest.raises(ValueError, match="nan"):
        kb.set(z=float("nan"))
    with pytest.raises(ValueError, match="'grab'"):
        kb.set(gripper="grab")  # type: ignore[arg-type]
    kb.release()
    assert np.allclose(kb.action()[:3], 0.0)
