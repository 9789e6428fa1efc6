"""Write calibration results into the robot's YAML config, keeping everything else as it was.

ruamel.yaml's round-trip mode keeps comments, key order and flow style. The edited document is
validated as a whole with `parse_config` before anything is written, then written atomically
(temporary file, fsync, `os.replace`) after the previous version was kept as `<file>.bak`. So the
config file is always either the old one or the new, valid one. A running daemon does not re-read
its config: changes take effect at its next start.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from spec.config import Config, ConfigError, parse_config
from spec.files import atomic_write_bytes

TAKES_EFFECT = "saved; takes effect at the next daemon start (the running daemon keeps its settings)"
_LOCK = threading.Lock()  # one writer at a time within a process (API threads, CLI)


class ConfigEditError(ValueError):
    """A refused edit; `field` names the config field (e.g. `workspace.high`, `cameras.wrist.crop`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _yaml(text: str = "") -> YAML:
    """A round-trip YAML that indents like `text` (ruamel's defaults would re-indent lists)."""
    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.width = 110
    mapping, offset = _guess_indent(text)
    y.indent(mapping=mapping, sequence=offset + 2, offset=offset)
    return y


def _guess_indent(text: str) -> tuple[int, int]:
    """(mapping indent, offset of a list's dash under its key) as the file writes them."""
    mapping: int | None = None
    offset: int | None = None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    for prev, line in zip(lines, lines[1:], strict=False):
        p_ind, ind = len(prev) - len(prev.lstrip()), len(line) - len(line.lstrip())
        if not prev.rstrip().endswith(":") or ind <= p_ind:
            continue
        if line.lstrip().startswith("- "):
            offset = ind - p_ind if offset is None else offset
        elif not prev.lstrip().startswith("- ") and mapping is None:
            mapping = ind - p_ind
    return mapping or 2, offset or 0


def to_plain(node: Any) -> Any:
    """ruamel's commented containers and scalar subclasses as plain Python values."""
    if isinstance(node, Mapping):
        return {str(k): to_plain(v) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [to_plain(v) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return node


def _styled(value: Any, like: Any = None) -> Any:
    """`value` as ruamel nodes; short lists and small mappings in flow style ([..], {..}) unless
    the node they replace was written in block style."""
    if isinstance(value, Mapping):
        m = CommentedMap()
        for k, v in value.items():
            m[k] = _styled(v)
        block = isinstance(like, CommentedMap) and not like.fa.flow_style() and len(like) > 0
        if not block and all(not isinstance(v, Mapping | list) for v in value.values()):
            m.fa.set_flow_style()
        return m
    if isinstance(value, list | tuple):
        s = CommentedSeq([_styled(v) for v in value])
        block = isinstance(like, CommentedSeq) and not like.fa.flow_style() and len(like) > 0
        if not block and all(not isinstance(v, Mapping | list | tuple) for v in value):
            s.fa.set_flow_style()
        return s
    return value


def _child(node: Any, key: str, where: str, create: bool) -> Any:
    if isinstance(node, list):
        # Lists of named items (cameras) are addressed by name.
        for item in node:
            if isinstance(item, Mapping) and str(item.get("name")) == key:
                return item
        names = [str(i.get("name")) for i in node if isinstance(i, Mapping)]
        raise ConfigEditError(where, f"no item named {key!r} (have {names})")
    if not isinstance(node, Mapping):
        raise ConfigEditError(where, "is not a section")
    if key not in node or node[key] is None:
        if not create:
            raise ConfigEditError(where, "is missing")
        node[key] = CommentedMap()
    return node[key]


def _set(doc: CommentedMap, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node: Any = doc
    for i, key in enumerate(keys[:-1]):
        node = _child(node, key, ".".join(keys[: i + 1]), create=keys[i] != "cameras")
    last = keys[-1]
    if not isinstance(node, Mapping):
        raise ConfigEditError(".".join(keys[:-1]), "is not a section")
    old = node.get(last)
    if value is None:
        node.pop(last, None)
    elif isinstance(old, CommentedMap) and isinstance(value, Mapping):
        # Edit the mapping in place: its position, style and comments stay.
        for k in [k for k in old if k not in value]:
            del old[k]
        for k, v in value.items():
            old[k] = _styled(v, old.get(k))
    else:
        node[last] = _styled(value, old)


def _read(path: Path) -> tuple[CommentedMap, str]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigEditError("(file)", f"cannot read {path}: {exc.strerror}") from None
    try:
        doc = _yaml(text).load(text)
    except Exception as exc:  # ruamel's YAMLError and friends
        raise ConfigEditError("(file)", f"{path} is not valid YAML: {exc}") from None
    if doc is None:
        doc = CommentedMap()
    if not isinstance(doc, CommentedMap):
        raise ConfigEditError("(top level)", f"{path} must be a mapping of sections")
    return doc, text


def read_document(path: str | Path) -> CommentedMap:
    return _read(Path(path))[0]


def plan_edit(path: str | Path, edits: Mapping[str, Any]) -> tuple[CommentedMap, Config, str]:
    """The edited document, its validated config and the original text; nothing is written."""
    doc, text = _read(Path(path))
    for dotted, value in edits.items():
        _set(doc, dotted, value)
    try:
        # The file alone must be valid: environment overrides are not part of it.
        cfg = parse_config(to_plain(doc), str(path), env={})
    except ConfigError as exc:
        field = ", ".join(edits)
        raise ConfigEditError(field, f"the edited config would be invalid: {exc}") from None
    return doc, cfg, text


def edit_config(path: str | Path, edits: Mapping[str, Any]) -> Config:
    """Apply `edits` ({"workspace.low": [...], "cameras.wrist.crop": {...}}, None deletes a key)
    to the YAML file at `path` if the result is a valid config; return that config."""
    path = Path(path)
    with _LOCK:
        doc, cfg, original = plan_edit(path, edits)
        buf = io.StringIO()
        _yaml(original).dump(doc, buf)
        text = buf.getvalue()
        # What is written must be what was validated.
        check = _yaml(text).load(text)
        try:
            parse_config(to_plain(check), str(path), env={})
        except ConfigError as exc:  # pragma: no cover - a ruamel round-trip bug
            raise ConfigEditError(", ".join(edits), f"writing would change the meaning: {exc}") from None
        _atomic_replace(path, text)
    return cfg


def backup_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".bak")


def _atomic_replace(path: Path, text: str) -> None:
    """Keep the previous file as `.bak`, then replace it; each write is temp file + rename + fsync,
    so a crash never leaves half a config or half a backup."""
    mode = path.stat().st_mode & 0o7777 if path.exists() else None
    if path.exists():
        atomic_write_bytes(backup_path(path), path.read_bytes(), fsync=True, mode=mode)
    atomic_write_bytes(path, text.encode(), fsync=True, mode=mode)


def camera_names(path: str | Path) -> Sequence[str]:
    doc = read_document(path)
    cams = doc.get("cameras") or []
    return [str(c.get("name")) for c in cams if isinstance(c, Mapping)]
