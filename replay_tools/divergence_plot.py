"""The PNG of `replay sim --plot`: errors per step, and the top-down paths of the end-effector and
the cube, logged vs simulated. matplotlib is only a dev dependency, so it is imported on use."""

from __future__ import annotations

from pathlib import Path

from replay_tools.resim import Divergence


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def plot_divergence(div: Divergence, path: Path, title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailable(
            "the plot needs matplotlib, which is not installed here: pip install matplotlib "
            "(or install the package's dev extra); the table and --out work without it"
        ) from None
    errs = div.errors()
    fig, (ax_mm, ax_deg, ax_xy) = plt.subplots(1, 3, figsize=(15, 4.5))
    for name, label in (("ee_err_mm", "end-effector"), ("gripper_err_mm", "gripper width"), ("obj_err_mm", "object")):
        if errs[name] is not None:
            ax_mm.plot(errs[name], label=label)
    ax_mm.set(xlabel="step", ylabel="|sim - log| (mm)", title="position error")
    ax_mm.legend()
    for name, label in (("ee_yaw_err_deg", "end-effector"), ("obj_yaw_err_deg", "object (mod 90)")):
        if errs[name] is not None:
            ax_deg.plot(errs[name], label=label)
    ax_deg.set(xlabel="step", ylabel="|sim - log| (deg)", title="yaw error")
    if ax_deg.lines:
        ax_deg.legend()
    else:
        ax_deg.text(0.5, 0.5, "no yaw logged", ha="center", va="center", transform=ax_deg.transAxes)
    for traj, who, style in ((div.log, "log", "-"), (div.sim, "sim", "--")):
        ax_xy.plot(traj.ee[:, 0], traj.ee[:, 1], style, color="tab:blue", label=f"end-effector ({who})")
        if traj.cube is not None:
            ax_xy.plot(traj.cube[:, 0], traj.cube[:, 1], style, color="tab:red", label=f"object ({who})")
    ax_xy.plot(*div.log.ee[0, :2], "o", color="tab:blue")
    ax_xy.set(xlabel="x (m)", ylabel="y (m)", title="top-down paths (o: start)")
    ax_xy.set_aspect("equal", adjustable="datalim")
    ax_xy.legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
