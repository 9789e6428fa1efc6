"""The typed config: defaults load, env overrides apply, bad values name their field."""

from __future__ import annotations

from pathlib import Path

import pytest

from spec.config import ConfigError, ServerConfig, is_loopback, load_config, parse_config

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_configs_load():
    for name in ("sim.yaml", "franka.yaml"):
        path = ROOT / "spec" / "configs" / name
        if path.exists():
            cfg = load_config(path, env={})
            assert cfg.control.rate_hz > 0
            assert cfg.cameras, f"{name} names no cameras"


def test_env_override_sets_nested_field_and_named_camera():
    cfg = load_config(
        ROOT / "spec" / "configs" / "sim.yaml",
        env={"ROBOT__ARM__HOST": "10.1.2.3", "ROBOT__CAMERAS__WRIST__FPS": "20", "ROBOT__SERVER__PORT": "8123"},
    )
    assert cfg.arm.host == "10.1.2.3"
    assert cfg.camera("wrist").fps == 20
    assert cfg.server.port == 8123


@pytest.mark.parametrize(
    ("tree", "field"),
    [
        ({"control": {"rate_hz": -1}}, "control.rate_hz"),
        ({"arm": {"backend": "ros"}}, "arm.backend"),
        ({"workspace": {"low": [0.5, 0, 0], "high": [0.4, 1, 1]}}, "workspace"),
        ({"cameras": [{"name": "w", "width": 64, "height": 64, "crop": {"x": 40, "y": 0, "w": 40, "h": 10}}]},
         "cameras.0"),
        ({"server": {"tokn": "abcdefgh"}}, "server.tokn"),
        ({"arm": {"home_joints": [0, 0]}}, "arm.home_joints"),
        ({"server": {"read_access": "lan"}}, "server.read_access"),
    ],
)
def test_bad_value_names_the_field(tree, field):
    with pytest.raises(ConfigError) as exc:
        parse_config(tree, "test.yaml", env={})
    assert field in str(exc.value)


def test_bad_env_override_names_the_variable():
    with pytest.raises(ConfigError) as exc:
        parse_config({}, "test.yaml", env={"ROBOT__CONTROL__RATE_HZ": "fast"})
    assert "control.rate_hz" in str(exc.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.1.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("::ffff:127.0.0.1", True), ("0.0.0.0", False), ("::", False), ("192.168.1.20", False),
     ("robot.local", False), ("", False)],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_reads_need_the_token_beyond_loopback_unless_opened() -> None:
    assert not ServerConfig().reads_need_token  # the default bind is 127.0.0.1
    assert ServerConfig(host="0.0.0.0").reads_need_token
    assert ServerConfig(host="10.0.0.5", read_access="auto").reads_need_token
    assert not ServerConfig(host="0.0.0.0", read_access="open").reads_need_token  # the operator's choice
    assert ServerConfig(host="127.0.0.1", read_access="token").reads_need_token
    cfg = load_config(ROOT / "spec" / "configs" / "sim.yaml", env={"ROBOT__SERVER__HOST": "0.0.0.0"})
    assert cfg.server.read_access == "auto" and cfg.server.reads_need_token


def test_the_old_protect_reads_option_says_what_replaced_it() -> None:
    with pytest.raises(ConfigError, match="read_access"):
        parse_config({"server": {"protect_reads": True}}, "test.yaml", env={})


def test_token_file_from_env_wins_over_the_yaml_token(tmp_path):
    # A compose secret is a file at /run/secrets/NAME; the containers point at it by env var.
    secret = tmp_path / "api_token"
    secret.write_text("s3cret-from-a-file\n")
    cfg = load_config(ROOT / "spec" / "configs" / "sim.yaml", env={"ROBOT__SERVER__TOKEN_FILE": str(secret)})
    assert cfg.server.token == "s3cret-from-a-file"


@pytest.mark.parametrize(("content", "needle"), [(None, "cannot be read"), ("short\n", "at least 8")])
def test_bad_token_file_names_the_field_and_the_file(tmp_path, content, needle):
    secret = tmp_path / "api_token"
    if content is not None:
        secret.write_text(content)
    with pytest.raises(ConfigError) as exc:
        parse_config({"server": {"token_file": str(secret)}}, "test.yaml", env={})
    msg = str(exc.value)
    assert "server" in msg and "token_file" in msg and str(secret) in msg and needle in msg
