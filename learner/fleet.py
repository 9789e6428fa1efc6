"""The robots a learner serves: each one's store to tail and daemon to push to.

One robot (no `learner.robots`): the config's own store.path and server, named "" so saved state
and chunk keys are as before. A fleet (`learner.robots`): every robot's store is tailed into the
same buffers, so a batch samples steps uniformly across them (each robot in proportion to the steps
it has in the buffers), and each robot gets every policy through its own Pusher (own URL, token,
retry and backoff), so a robot that is down delays nobody else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from replay.location import StoreLocation, store_location
from spec.config import Config


@dataclass(frozen=True)
class RobotLink:
    name: str  # "" for the single robot of a one-robot config
    location: StoreLocation
    server: str
    token: str


def robot_links(
    cfg: Config, store_path: str | Path | None, server: str | None, token: str | None
) -> list[RobotLink]:
    """The robots to serve; ValueError naming the robot whose token cannot be read."""
    if not cfg.learner.robots:
        store = cfg.store if store_path is None else cfg.store.model_copy(update={"path": store_path})
        location = store_location(store)
        return [RobotLink("", location, server or f"http://{cfg.server.host}:{cfg.server.port}",
                          token or cfg.server.token)]
    if store_path is not None or server is not None:
        raise ValueError("learner.robots names every robot's store and server: --store/--server apply to one robot only")
    return [RobotLink(r.name, store_location(r.store), r.server_url, r.resolved_token()) for r in cfg.learner.robots]
