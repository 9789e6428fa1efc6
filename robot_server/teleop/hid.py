"""3Dconnexion SpaceMouse HID reports and device discovery on Linux hidraw.

Reports, as Linux hidraw delivers them (first byte = report id):
- id 1, 12 data bytes (newer models): six little-endian int16 tx ty tz rx ry rz;
- id 1, 6 data bytes (older models): tx ty tz, and id 2, 6 data bytes: rx ry rz;
- id 3: the button bitmask, little-endian, bit 0 = the left (or first) button.
Raw values reach about +-350. The device frame: +x right, +y toward the user, +z down (pressing the
cap); rotations follow the right-hand rule about those axes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

AXES = ("tx", "ty", "tz", "rx", "ry", "rz")
LOGITECH = 0x046D  # 3Dconnexion's older devices carry Logitech's vendor id
THREEDCONNEXION = 0x256F

# Product ids of 6-DoF devices (from the pyspacemouse and spacenavd device tables).
KNOWN_PRODUCTS: dict[tuple[int, int], str] = {
    (LOGITECH, 0xC603): "SpaceMouse Plus XT",
    (LOGITECH, 0xC605): "CadMan",
    (LOGITECH, 0xC606): "SpaceMouse Classic",
    (LOGITECH, 0xC621): "SpaceBall 5000",
    (LOGITECH, 0xC623): "SpaceTraveler",
    (LOGITECH, 0xC625): "SpacePilot",
    (LOGITECH, 0xC626): "SpaceNavigator",
    (LOGITECH, 0xC627): "SpaceExplorer",
    (LOGITECH, 0xC628): "SpaceNavigator for Notebooks",
    (LOGITECH, 0xC629): "SpacePilot Pro",
    (LOGITECH, 0xC62B): "SpaceMouse Pro",
    (THREEDCONNEXION, 0xC62E): "SpaceMouse Wireless (cable)",
    (THREEDCONNEXION, 0xC62F): "SpaceMouse Wireless (receiver)",
    (THREEDCONNEXION, 0xC631): "SpaceMouse Pro Wireless (cable)",
    (THREEDCONNEXION, 0xC632): "SpaceMouse Pro Wireless (receiver)",
    (THREEDCONNEXION, 0xC633): "SpaceMouse Enterprise",
    (THREEDCONNEXION, 0xC635): "SpaceMouse Compact",
    (THREEDCONNEXION, 0xC636): "SpaceMouse Module",
    (THREEDCONNEXION, 0xC638): "SpaceMouse Pro Wireless (Bluetooth)",
    (THREEDCONNEXION, 0xC63A): "SpaceMouse Wireless (Bluetooth)",
    (THREEDCONNEXION, 0xC641): "SpaceMouse USB",
    (THREEDCONNEXION, 0xC652): "3Dconnexion Universal Receiver",
}

MAX_BUTTON_BYTES = 8  # a 64-bit mask covers every model's buttons


class ReportError(ValueError):
    """A report that is not a well-formed SpaceMouse input report."""


@dataclass(frozen=True)
class HidReport:
    """What one report carries; fields it does not carry are None."""

    translation: tuple[int, int, int] | None = None
    rotation: tuple[int, int, int] | None = None
    buttons: int | None = None


def decode_report(data: bytes | bytearray | memoryview) -> HidReport | None:
    """Decode one raw report. None for report ids that carry no input (LEDs, battery level).

    Raises ReportError, naming the problem, for empty, short or non-byte input.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ReportError(f"a report must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise ReportError("empty report")
    rid, body = data[0], data[1:]
    if rid == 1:
        if len(body) >= 12:
            v = struct.unpack_from("<6h", body)
            return HidReport(translation=v[:3], rotation=v[3:])
        if len(body) >= 6:
            return HidReport(translation=struct.unpack_from("<3h", body))
        raise ReportError(f"report id 1 has {len(body)} data bytes, expected 6 or 12: {data.hex()}")
    if rid == 2:
        if len(body) >= 6:
            return HidReport(rotation=struct.unpack_from("<3h", body))
        raise ReportError(f"report id 2 has {len(body)} data bytes, expected 6: {data.hex()}")
    if rid == 3:
        if not body:
            raise ReportError("report id 3 (buttons) has no data bytes")
        return HidReport(buttons=int.from_bytes(body[:MAX_BUTTON_BYTES], "little"))
    return None


def encode_report(report_id: int, values: tuple[int, ...] = (), buttons: int | None = None) -> bytes:
    """The raw bytes a device sends (tests and tools): int16 values, or a 2-byte button mask."""
    if buttons is not None:
        return bytes([report_id]) + buttons.to_bytes(2, "little")
    return bytes([report_id]) + struct.pack(f"<{len(values)}h", *values)


@dataclass(frozen=True)
class HidDevice:
    path: str  # /dev/hidrawN
    vendor_id: int
    product_id: int
    name: str


def _uevent(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key] = value
    return out


def find_spacemice(sysfs: Path = Path("/sys/class/hidraw"), dev: Path = Path("/dev")) -> list[HidDevice]:
    """Known 3Dconnexion 6-DoF devices among the hidraw nodes, in node order."""
    found = []
    nodes = sorted(sysfs.glob("hidraw*"), key=lambda p: (len(p.name), p.name)) if sysfs.is_dir() else []
    for node in nodes:
        try:
            info = _uevent(node / "device" / "uevent")
            # HID_ID=BUS:VENDOR:PRODUCT in hex, e.g. 0003:0000256F:0000C635
            _bus, vendor, product = info["HID_ID"].split(":")
            ids = (int(vendor, 16), int(product, 16))
        except (OSError, KeyError, ValueError):
            continue
        if ids in KNOWN_PRODUCTS:
            name = info.get("HID_NAME") or KNOWN_PRODUCTS[ids]
            found.append(HidDevice(str(dev / node.name), ids[0], ids[1], name))
    return found
