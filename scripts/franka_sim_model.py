"""Build an offline FR3 MuJoCo model for franka-sim from the URDF that franka-sim bundles.

franka-sim's default model is MuJoCo Menagerie's FR3, which `robot_descriptions` downloads (a git
clone) on first use: that fails, or hangs, without network. The URDF it ships for GetRobotModel has
the FR3's real kinematics and inertias but `package://` meshes that are not installed, so we drop
every visual and collision geom (franka-sim then switches its self-collision reflex off, which
our tests do not need) and replace the URDF's tiny joint damping with values that keep the
torque-level control stable: armature 0.5 and damping 1 (FACTS.md).

Run with the franka-sim venv's Python (its MuJoCo is the one the server compiles the model with):
    .venv-franka-sim/bin/python scripts/franka_sim_model.py OUT.xml
"""

from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ARMATURE = 0.5  # kg m^2, reflected rotor inertia: damps the 1 kHz torque loop
DAMPING = 1.0  # Nm s/rad


def bundled_urdf() -> Path:
    import franka_sim

    path = Path(franka_sim.__file__).parent / "models" / "fr3.urdf"
    if not path.is_file():
        raise FileNotFoundError(f"franka-sim does not ship {path}")
    return path


def strip_geometry(urdf_text: str) -> str:
    """The URDF without <visual>/<collision> elements (their meshes are not installed)."""
    root = ET.fromstring(urdf_text)
    for link in root.iter("link"):
        for tag in ("visual", "collision"):
            for element in link.findall(tag):
                link.remove(element)
    return ET.tostring(root, encoding="unicode")


def build(out: Path) -> None:
    import mujoco

    spec = mujoco.MjSpec.from_string(strip_geometry(bundled_urdf().read_text()))
    joints = [j for j in spec.joints if j.type == mujoco.mjtJoint.mjJNT_HINGE]
    if len(joints) != 7:
        raise RuntimeError(f"expected 7 arm joints in the FR3 URDF, found {len(joints)}")
    for joint in joints:
        joint.armature = ARMATURE
        joint.damping = DAMPING
        joint.frictionloss = 0.0
    spec.compile()  # fail here, not in the server, if the model is broken
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(spec.to_xml())
    tmp.replace(out)  # atomic: a half-written model never looks finished
    # Re-load the written file exactly as franka-sim will.
    model = mujoco.MjSpec.from_file(str(out)).compile()
    print(f"wrote {out}: {model.nbody} bodies, {model.njnt} joints, {model.ngeom} geoms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="where to write the MJCF file")
    args = parser.parse_args(argv)
    build(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
