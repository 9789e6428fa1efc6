"""`PushCube-v0`: the sim push task as a synchronous gymnasium env (DESIGN.md "Training harness").

The daemon practises in real time; this env steps the same world, controller, arm, task and
action clip from the caller's thread, as fast as the CPU allows: no physics thread, no pacing, no
sleeps. One `step()` is one control period (`control.rate_hz`, 10 Hz) of simulated time, done as
the daemon's tick does it: read the arm, clip the action (`ActionSpace.clip_action`), send
`ActionSpace.target(...)` to the sim arm, then let the physics run for the period.

Observations use the store's keys: "obs/state" (the task's state vector, STATE_LAYOUT),
"obs/proprio" and, with `obs_mode="pixels"`, "obs/<camera>" for each sim camera of the config,
cropped and resized by `camera.crop.view_of` as the daemon's Observer does. Pixels are rendered
in-process with `mujoco.Renderer` (the render process's settings: the frames equal the daemon's
byte for byte), so a pixel env must be stepped from the thread that built it (EGL contexts are
per thread); state mode never creates a GL context.

Reward: the task's true sparse success (1.0 while the cube rests in the goal zone of the current
direction, else 0.0), also in `info["success"]`. MEDAL++ learners must not train on it: they
replace it with classifier rewards computed from the observations and keep the true success for
evaluation only. Episodes never terminate (online steps bootstrap forever); they are truncated
after `max_episode_steps` steps since the last reset (None: never).

Modes:
- episodic (`reset_free=False`, default): every `reset()` puts the cube at the start distribution
  of the direction and the arm at home, like any gymnasium env.
- reset-free (`reset_free=True`): only the first `reset()` places the scene. Later ones switch
  direction (`options={"direction": ...}`) and return the current observation, touching nothing,
  unless the caller spends an intervention: `options={"intervention": True}` resets the scene to
  the start distribution of the direction and increments `env.interventions`. Truncation then
  marks the end of a practice phase (200 steps each way in MEDAL++). `env.interventions` and
  `env.intervention_steps` (env step of each) are what EARL reports; in episodic mode every reset
  places the scene and nothing is counted.
In both, `options={"home_arm": True}` returns the arm alone to its home pose (the scene is not
touched; MEDAL++ does this every 1,000 steps), synchronously and not counted as env steps.

    import gymnasium, sim.gym_env
    env = gymnasium.make("PushCube-v0", reset_free=True, start_jitter_m=0.05, start_jitter_yaw_deg=45)
    obs, info = env.reset(seed=0, options={"direction": "forward"})
    obs, reward, terminated, truncated, info = env.step(env.unwrapped.expert_action())
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from arm.base import ArmMode
from camera.crop import view_of
from sim.controller import Phase
from sim.rig import build_sim
from sim.task import STATE_DIM
from spec.config import Config, SimConfig, load_config
from spec.direction import Direction, check_direction
from spec.goal import GOAL_HOLD_STEPS
from spec.step import ActionSpace

ENV_ID = "PushCube-v0"
OBS_BOUND = 1.5  # task.state_vector and ActionSpace.proprio clip to +-1.5
HOME_TIMEOUT_S = 10.0  # simulated seconds a return home may take
_RESET_OPTIONS = {"direction", "intervention", "home_arm"}


class Transition(NamedTuple):
    obs: dict[str, np.ndarray]
    action: np.ndarray  # the executed (clipped) action, float32
    next_obs: dict[str, np.ndarray]
    success: bool  # the task's success test in next_obs's state


class DemoFailed(RuntimeError):
    pass


class PushCubeEnv(gym.Env[dict[str, np.ndarray], np.ndarray]):
    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        cfg: Config | None = None,
        obs_mode: Literal["state", "pixels"] = "state",
        reset_free: bool = False,
        seed: int | None = None,
        direction: str = "forward",
        max_episode_steps: int | None = 200,
        start_jitter_m: float | None = None,
        start_jitter_yaw_deg: float | None = None,
    ) -> None:
        """`cfg` None loads the packaged sim config (ROBOT__ environment overrides ignored, so a run does
        not depend on the shell). `start_jitter_*` override `cfg.sim` (validated like the YAML).
        `seed` seeds the first reset when it is given none."""
        if obs_mode not in ("state", "pixels"):
            raise ValueError(f"obs_mode must be 'state' or 'pixels', got {obs_mode!r}")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1 or None, got {max_episode_steps}")
        cfg = cfg if cfg is not None else load_config("sim", env={})
        cfg = _with_jitter(cfg, start_jitter_m, start_jitter_yaw_deg)
        self.cfg = cfg
        self.obs_mode = obs_mode
        self.reset_free = bool(reset_free)
        self.max_episode_steps = max_episode_steps
        self.direction: Direction = check_direction(direction)
        rig = build_sim(cfg, cameras=False)  # pixels are rendered here, synchronously
        self.world, self.task, self.arm, self.expert = rig.world, rig.task, rig.arm, rig.expert
        self.arm.connect()
        self.space = ActionSpace(cfg.action, cfg.workspace)
        self.period_s = 1.0 / cfg.control.rate_hz
        self.interventions = 0
        self.intervention_steps: list[int] = []  # total_steps at which each intervention was spent
        self.total_steps = 0
        self.episode_steps = 0
        self._init_seed = seed
        self._placed = False

        self.action_space = spaces.Box(-1.0, 1.0, (self.space.dim,), np.float32)
        obs_spaces: dict[str, spaces.Space] = {
            "obs/state": spaces.Box(-OBS_BOUND, OBS_BOUND, (STATE_DIM,), np.float32),
            "obs/proprio": spaces.Box(-OBS_BOUND, OBS_BOUND, (self.space.proprio_dim,), np.float32),
        }
        self._cameras: list[_PixelCamera] = []
        if obs_mode == "pixels":
            self._render_data = mujoco.MjData(self.world.model)
            self._cameras = _pixel_cameras(cfg, self.world.model)
            for cam in self._cameras:
                out = cam.cfg.output
                obs_spaces[f"obs/{cam.cfg.name}"] = spaces.Box(0, 255, (out.height, out.width, 3), np.uint8)
        self.observation_space = spaces.Dict(obs_spaces)

    # --- gymnasium API ------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        options = dict(options or {})
        unknown = set(options) - _RESET_OPTIONS
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)} (have {sorted(_RESET_OPTIONS)})")
        first = not self._placed
        super().reset(seed=self._init_seed if seed is None and first else seed)
        if options.get("direction") is not None:
            self.direction = check_direction(options["direction"])
        if not self.reset_free or first:
            self._place_scene()
        elif options.get("intervention"):
            self._place_scene()
            self.interventions += 1
            self.intervention_steps.append(self.total_steps)
        elif options.get("home_arm"):
            self.home_arm()
        self.episode_steps = 0
        return self._observe(), self._info()

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        # The daemon's tick: clip (InvalidAction on a wrong shape or NaN, as the daemon refuses it),
        # target relative to the measured pose, then one control period of physics.
        executed = self.space.clip_action(action)
        state = self.arm.read()
        if state.mode is ArmMode.READY:
            self.arm.send_target(self.space.target(executed, state))
        self.world.advance(self.period_s)
        self.total_steps += 1
        self.episode_steps += 1
        info = self._info()
        info["executed_action"] = executed.astype(np.float32)
        truncated = self.max_episode_steps is not None and self.episode_steps >= self.max_episode_steps
        return self._observe(), float(info["success"]), False, truncated, info

    def close(self) -> None:
        for cam in self._cameras:
            cam.renderer.close()
        self._cameras = []
        self.world.close()

    # --- helpers ------------------------------------------------------------------------------
    def expert_action(self) -> np.ndarray:
        """The scripted expert's action for the current state and direction (float32, in [-1, 1])."""
        return self.expert.act(self.direction)

    def reset_to_start(self, direction: str, rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
        """Place the scene at `direction`'s start distribution without counting an intervention
        (demonstrations and evaluation, not practice); returns the observation."""
        self.direction = check_direction(direction)
        self._place_scene(rng)
        self.episode_steps = 0
        return self._observe()

    def home_arm(self) -> None:
        """Return the arm alone to its home pose (cube untouched), stepping the physics until it is
        there; the daemon's periodic return home."""
        self.arm.go_home()
        for _ in range(round(HOME_TIMEOUT_S / self.period_s)):
            if self.world.controller.phase is Phase.READY:
                return
            self.world.advance(self.period_s)
        raise RuntimeError(f"the arm did not reach home within {HOME_TIMEOUT_S} s of sim time")

    def success(self) -> bool:
        return self.task.success(self.direction)

    def _place_scene(self, rng: np.random.Generator | None = None) -> None:
        self.task.reset_scene(self.direction, self.np_random if rng is None else rng)
        self.expert.reset()
        self._placed = True

    def _info(self) -> dict[str, Any]:
        return {
            "success": self.task.success(self.direction),
            "direction": self.direction,
            "object_in_workspace": self.task.object_in_workspace(),
            "interventions": self.interventions,
        }

    def _observe(self) -> dict[str, np.ndarray]:
        obs = {
            "obs/state": self.task.state_vector(),
            "obs/proprio": self.space.proprio(self.arm.read()),
        }
        if self._cameras:
            # Like the render process: its own MjData, qpos copied, full forward, then render.
            rd, d = self._render_data, self.world.data
            rd.qpos[:] = d.qpos
            rd.mocap_pos[:] = d.mocap_pos
            rd.mocap_quat[:] = d.mocap_quat
            mujoco.mj_forward(self.world.model, rd)
            for cam in self._cameras:
                cam.renderer.update_scene(rd, camera=cam.cam_id)
                obs[f"obs/{cam.cfg.name}"] = view_of(cam.renderer.render(), cam.cfg)
        return obs


class _PixelCamera(NamedTuple):
    cfg: Any  # camera.config.CameraConfig
    cam_id: int
    renderer: mujoco.Renderer


def _pixel_cameras(cfg: Config, model: mujoco.MjModel) -> list[_PixelCamera]:
    # Imported here: state mode never touches rendering code.
    from sim.render_process import make_renderer

    cams = [c for c in cfg.cameras if c.backend == "sim"]
    if not cams:
        raise ValueError("obs_mode='pixels' needs at least one camera with backend: sim in the config")
    out = []
    for c in cams:
        name = c.sim_camera or c.name
        cam_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, name)
        if cam_id < 0:
            raise ValueError(f"camera {c.name!r}: no MuJoCo camera named {name!r}")
        out.append(_PixelCamera(c, cam_id, make_renderer(model, c.height, c.width)))
    return out


def _with_jitter(cfg: Config, jitter_m: float | None, jitter_yaw_deg: float | None) -> Config:
    updates = {
        k: v
        for k, v in (("start_jitter_m", jitter_m), ("start_jitter_yaw_deg", jitter_yaw_deg))
        if v is not None
    }
    if not updates:
        return cfg
    sim = SimConfig.model_validate({**cfg.sim.model_dump(), **updates})  # range checks as in the YAML
    return cfg.model_copy(update={"sim": sim})


def scripted_demo(
    env: gym.Env,
    direction: str,
    rng: np.random.Generator | None = None,
    max_steps: int = 300,
    hold_steps: int = GOAL_HOLD_STEPS,
) -> list[Transition]:
    """One scripted-expert demonstration from `direction`'s start distribution (no intervention
    counted). It goes on after success until the last `hold_steps` transitions show the goal in
    both obs and next_obs (MEDALPP.md: goal positives must be goal frames); DemoFailed otherwise."""
    base: PushCubeEnv = env.unwrapped  # type: ignore[assignment]
    obs = base.reset_to_start(direction, rng)
    out: list[Transition] = []
    held = 0  # consecutive successful states, counting next_obs of each step
    for _ in range(max_steps):
        next_obs, _r, _term, _trunc, info = base.step(base.expert_action())
        out.append(Transition(obs, info["executed_action"], next_obs, bool(info["success"])))
        held = held + 1 if info["success"] else 0
        # hold_steps transitions whose obs is also a goal frame: hold_steps + 1 goal states.
        if held >= hold_steps + 1:
            return out
        obs = next_obs
    raise DemoFailed(
        f"{direction} demo: goal not held {hold_steps + 1} steps within {max_steps}; "
        f"cube at {base.task.cube_position().round(3).tolist()}"
    )


if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point=f"{__name__}:PushCubeEnv")
