"""The MJCF of the simulated world, generated here: a Franka Panda of primitive geoms, a table with
two coloured zones, a cube, and the "wrist" and "front" cameras.

No third-party model file is used. The arm follows Franka's published kinematics (modified DH:
d1 = 0.333, d3 = 0.316, a4 = 0.0825, a5 = -0.0825, d5 = 0.384, a7 = 0.088, flange d = 0.107; the
hand is turned -45 deg about the flange axis and its TCP sits 0.1034 m beyond the flange), joint
limits and link masses from the Franka datasheet / franka_description. Shapes are capsules and
boxes sized roughly like the real links: good enough to collide with a cube and to look like an
arm in 96-pixel images, cheap to render on a CPU.

The robot base is the world origin and the table top is z = 0, so positions are in the robot base
frame the workspace box is expressed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ARM_JOINTS = tuple(f"joint{i}" for i in range(1, 8))
FINGER_JOINTS = ("finger_left", "finger_right")
ARM_ACTUATORS = tuple(f"act{i}" for i in range(1, 8))
FINGER_ACTUATORS = ("act_finger_left", "act_finger_right")
TCP_SITE = "tcp"
CUBE_BODY = "cube"
CUBE_JOINT = "cube_free"
HAND_BODIES = ("hand", "left_finger", "right_finger")

# Franka Panda joint limits (rad), from the datasheet.
JOINT_LOWER = np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973])
JOINT_UPPER = np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973])
FINGER_MAX = 0.04  # per finger, m: the hand opens to 0.08
TCP_OFFSET = 0.1034  # flange to TCP along the hand axis, m
CUBE_HALF = 0.025


@dataclass(frozen=True)
class SceneExtras:
    """Optional MJCF fragments added to the world, e.g. a calibration board (none by default)."""

    assets: str = ""  # inside <asset>
    worldbody: str = ""  # inside <worldbody>
    hand: str = ""  # inside the hand body: origin at the flange, axes as the TCP's, TCP at z = 0.1034


@dataclass(frozen=True)
class Zone:
    name: str
    center: tuple[float, float]  # x, y on the table, m
    half: float  # half the side of the square patch, m
    rgba: tuple[float, float, float, float]

    def contains(self, xy: np.ndarray, margin: float = 0.0) -> bool | np.ndarray:
        """One point [>= 2] gives a bool; many [..., >= 2] give a bool array (x, y of each)."""
        d = np.abs(np.asarray(xy, dtype=np.float64)[..., :2] - np.asarray(self.center))
        inside = np.all(d <= self.half - margin, axis=-1)
        return bool(inside) if inside.ndim == 0 else inside


# The task: push the cube from A (red, right of the arm seen from behind) to B (green), and back.
ZONE_A = Zone("zone_a", (0.53, -0.12), 0.06, (0.85, 0.2, 0.15, 1.0))
ZONE_B = Zone("zone_b", (0.53, 0.12), 0.06, (0.15, 0.7, 0.25, 1.0))

# Table top extent in the base frame (the cube has fallen off outside it).
TABLE_X = (-0.25, 0.95)
TABLE_Y = (-0.6, 0.6)

# name, parent->child position, parent->child rotation about x (deg), mass (kg) from the URDF
# inertials, and capsule segments (from, to, radius) in the link frame.
_LINKS = [
    ("link1", (0, 0, 0.333), 0, 4.97, [((0, 0, -0.19), (0, 0, 0.0), 0.062)]),
    ("link2", (0, 0, 0), -90, 0.65, [((0, 0, -0.06), (0, 0, 0.06), 0.06), ((0, 0, 0), (0, -0.2, 0), 0.058)]),
    (
        "link3",
        (0, -0.316, 0),
        90,
        3.23,
        [((0, 0, -0.12), (0, 0, 0.0), 0.055), ((0, 0, 0), (0.0825, 0, 0), 0.052)],
    ),
    (
        "link4",
        (0.0825, 0, 0),
        90,
        3.59,
        [((0, 0, -0.05), (0, 0, 0.05), 0.054), ((0, 0, 0), (-0.0825, 0.12, 0), 0.05)],
    ),
    ("link5", (-0.0825, 0.384, 0), -90, 1.23, [((0, 0, -0.27), (0, 0, -0.02), 0.048)]),
    ("link6", (0, 0, 0), 90, 1.67, [((0, 0, -0.04), (0, 0, 0.03), 0.046), ((0, 0, 0), (0.088, 0, 0), 0.044)]),
    ("link7", (0.088, 0, 0), 90, 0.74, [((0, 0, -0.03), (0, 0, 0.09), 0.044)]),
]
# Joint servos: kp (Nm/rad), kv (Nm s/rad), torque limit (Nm, the datasheet's 87 / 12). The damping
# is kept low enough (kv / inertia * dt < 1) to stay stable even when the torque saturates, where
# the implicit integrator's damping no longer applies.
_SERVO = [(3000, 150, 87)] * 4 + [(500, 25, 12)] * 3
_LINK_RGBA = ["0.94 0.94 0.94 1", "0.25 0.25 0.27 1"]


def _fmt(v: object) -> str:
    return " ".join(f"{x:.6g}" for x in np.ravel(np.asarray(v, dtype=np.float64)))


def _quat_x(deg: float) -> str:
    h = np.radians(deg) / 2.0
    return _fmt([np.cos(h), np.sin(h), 0.0, 0.0])


def _look_at(pos: np.ndarray, target: np.ndarray, up: np.ndarray) -> str:
    """`xyaxes` of a camera at `pos` looking at `target` (MuJoCo cameras look along their -z)."""
    f = np.asarray(target, float) - np.asarray(pos, float)
    f /= np.linalg.norm(f)
    x = np.cross(f, up)
    x /= np.linalg.norm(x)
    y = np.cross(-f, x)
    return _fmt(np.concatenate([x, y]))


def _arm_xml(hand_extra: str = "") -> str:
    parts: list[str] = []
    for i, (name, pos, rot, mass, caps) in enumerate(_LINKS):
        rgba = _LINK_RGBA[i % 2]
        j = i + 1
        parts.append(f'<body name="{name}" pos="{_fmt(pos)}" quat="{_quat_x(rot)}" gravcomp="1">')
        parts.append(f'<joint name="joint{j}" range="{JOINT_LOWER[i]:.4f} {JOINT_UPPER[i]:.4f}" ref="0"/>')
        for k, (a, b, r) in enumerate(caps):
            # The first capsule carries the link's mass; MuJoCo derives the inertia from its shape.
            m = f'mass="{mass}"' if k == 0 else 'mass="0.001"'
            parts.append(f'<geom class="arm" fromto="{_fmt(a)} {_fmt(b)}" size="{r}" {m} rgba="{rgba}"/>')
    # Flange, then the hand turned -45 deg about the flange axis.
    hq = _fmt([np.cos(-np.pi / 8), 0, 0, np.sin(-np.pi / 8)])
    # Beside the hand, below its body, looking down past the fingertips (like a D405 on a wrist mount).
    cam_pos = np.array([0.05, 0.0, 0.066])
    cam_axes = _look_at(cam_pos, np.array([0.0, 0.0, TCP_OFFSET + 0.07]), np.array([1.0, 0.0, 0.0]))
    parts.append(f'<body name="hand" pos="0 0 0.107" quat="{hq}" gravcomp="1">')
    parts.append(
        '<geom class="arm" type="cylinder" pos="0 0 0.006" size="0.04 0.006" mass="0.1" rgba="0.25 0.25 0.27 1"/>'
    )
    parts.append(
        '<geom class="arm" type="box" pos="0 0 0.037" size="0.022 0.1 0.025" mass="0.63" rgba="0.94 0.94 0.94 1"/>'
    )
    parts.append(f'<site name="{TCP_SITE}" pos="0 0 {TCP_OFFSET}" size="0.004" rgba="1 0 0 0" group="4"/>')
    parts.append(f'<camera name="wrist" pos="{_fmt(cam_pos)}" xyaxes="{cam_axes}" fovy="75"/>')
    if hand_extra:
        parts.append(hand_extra)
    for side, sign in (("left", 1), ("right", -1)):
        parts.append(f'<body name="{side}_finger" pos="0 0 0.0584" gravcomp="1">')
        parts.append(
            f'<joint name="finger_{side}" type="slide" axis="0 {sign} 0" range="0 {FINGER_MAX}" '
            'armature="0.01" damping="2"/>'
        )
        parts.append(
            f'<geom class="arm" type="box" pos="0 {sign * 0.0075} 0.025" size="0.011 0.0075 0.025" '
            'mass="0.015" friction="1.0 0.01 0.001" rgba="0.25 0.25 0.27 1"/>'
        )
        parts.append("</body>")
    parts.append("</body>")
    parts.extend("</body>" for _ in _LINKS)
    return "\n".join(parts)


def build_xml(
    home_joints: np.ndarray | list[float], physics_hz: float = 500.0, extras: SceneExtras | None = None
) -> str:
    """The world's MJCF as a string; `home_joints` is the arm pose of its "home" keyframe."""
    extras = extras or SceneExtras()
    home = np.asarray(home_joints, dtype=np.float64)
    if home.shape != (7,):
        raise ValueError(f"home_joints must have 7 values, got {home.shape}")
    dt = 1.0 / float(physics_hz)
    front_pos = np.array([1.0, 0.0, 0.45])
    front_axes = _look_at(front_pos, np.array([0.53, 0.0, 0.03]), np.array([0.0, 0.0, 1.0]))
    tx, ty = TABLE_X, TABLE_Y
    zones = "\n".join(
        f'<geom name="{z.name}" class="decor" type="box" pos="{z.center[0]} {z.center[1]} 0.0005" '
        f'size="{z.half} {z.half} 0.0005" rgba="{_fmt(z.rgba)}"/>'
        for z in (ZONE_A, ZONE_B)
    )
    acts = "\n".join(
        f'<position name="act{j + 1}" joint="joint{j + 1}" kp="{kp}" kv="{kv}" '
        f'ctrlrange="{JOINT_LOWER[j]:.4f} {JOINT_UPPER[j]:.4f}" forcerange="{-tau} {tau}"/>'
        for j, (kp, kv, tau) in enumerate(_SERVO)
    )
    return f"""
<mujoco model="sim_panda_push">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{dt:.6g}" integrator="implicitfast" cone="pyramidal"/>
  <statistic extent="1.5" center="0.4 0 0.2"/>
  <visual>
    <quality shadowsize="0" offsamples="0"/>
    <map znear="0.005" zfar="20"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.45 0.45 0.45" specular="0 0 0"/>
  </visual>
  <default>
    <joint armature="0.1" damping="1"/>
    <default class="arm">
      <geom type="capsule" contype="2" conaffinity="0" condim="3" friction="0.8 0.01 0.001"/>
    </default>
    <default class="decor">
      <geom contype="0" conaffinity="0" mass="0"/>
    </default>
  </default>
  <asset>
    {extras.assets}
  </asset>
  <worldbody>
    {extras.worldbody}
    <light name="sun" type="directional" dir="-0.3 0.2 -1" diffuse="0.55 0.55 0.55" specular="0 0 0"
           castshadow="false"/>
    <geom name="floor" type="plane" pos="0 0 -0.75" size="3 3 0.1" rgba="0.35 0.37 0.4 1"
          contype="1" conaffinity="3"/>
    <geom name="table" type="box" pos="{(tx[0] + tx[1]) / 2} {(ty[0] + ty[1]) / 2} -0.02"
          size="{(tx[1] - tx[0]) / 2} {(ty[1] - ty[0]) / 2} 0.02" rgba="0.62 0.55 0.45 1"
          contype="1" conaffinity="3" friction="0.5 0.005 0.0001"/>
    {zones}
    <camera name="front" pos="{_fmt(front_pos)}" xyaxes="{front_axes}" fovy="45"/>
    <body name="link0">
      <geom class="arm" fromto="-0.04 0 0 -0.02 0 0.14" size="0.07" rgba="0.94 0.94 0.94 1"/>
      {_arm_xml(extras.hand)}
    </body>
    <body name="{CUBE_BODY}" pos="{ZONE_A.center[0]} {ZONE_A.center[1]} {CUBE_HALF}">
      <freejoint name="{CUBE_JOINT}"/>
      <geom name="cube_geom" type="box" size="{CUBE_HALF} {CUBE_HALF} {CUBE_HALF}" mass="0.1"
            rgba="0.2 0.35 0.9 1" contype="1" conaffinity="3" condim="4" friction="0.5 0.01 0.0001"/>
    </body>
  </worldbody>
  <actuator>
    {acts}
    <position name="act_finger_left" joint="finger_left" kp="300" kv="10" ctrlrange="0 {FINGER_MAX}" forcerange="-20 20"/>
    <position name="act_finger_right" joint="finger_right" kp="300" kv="10" ctrlrange="0 {FINGER_MAX}" forcerange="-20 20"/>
  </actuator>
  <keyframe>
    <key name="home" qpos="{_fmt(home)} {FINGER_MAX} {FINGER_MAX} {ZONE_A.center[0]} {ZONE_A.center[1]} {CUBE_HALF} 1 0 0 0"
         ctrl="{_fmt(home)} {FINGER_MAX} {FINGER_MAX}"/>
  </keyframe>
</mujoco>
"""


def build_model(
    home_joints: np.ndarray | list[float],
    physics_hz: float = 500.0,
    gripper_force: float = 20.0,
    extras: SceneExtras | None = None,
):
    """Compile the world. Offline: everything is in the generated XML string (and `extras`)."""
    import mujoco

    model = mujoco.MjModel.from_xml_string(build_xml(home_joints, physics_hz, extras))
    for name in FINGER_ACTUATORS:
        aid = model.actuator(name).id
        model.actuator_forcerange[aid] = (-gripper_force, gripper_force)
    return model
