"""Live telemetry over a WebSocket: tick stats, phase, step, policies, interventions, scores."""

from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, WebSocket, WebSocketDisconnect, status

from robot_server.api.auth import token_matches
from robot_server.api.deps import jsonable

router = APIRouter(tags=["telemetry"])


def telemetry_message(daemon) -> dict:
    st = daemon.status()
    return jsonable(
        {
            "type": "telemetry",
            "time": st.get("time"),
            "mode": st.get("mode"),
            "stage": st.get("stage"),
            "tick": st.get("tick"),
            "session": st.get("session"),
            "demo": st.get("demo"),
            "eval": st.get("eval"),
            "policies": st.get("policies"),
            "counters": st.get("counters"),
            "help_requests": st.get("help_requests"),
            "recent_events": st.get("recent_events"),
            "arm": st.get("arm"),
            "action": st.get("action"),
            "action_source": st.get("action_source"),
            "takeover": st.get("takeover"),
            "store": st.get("store"),
            "learner": st.get("learner"),
            "classifier_scores": (daemon.learner_report or {}).get("classifier"),
            "control_loop_alive": st.get("control_loop_alive"),
        }
    )


@router.websocket("/telemetry")
async def telemetry(ws: WebSocket, interval: float = 0.25, token: str | None = None) -> None:
    """A read like the others: it needs the token when reads do (a browser's WebSocket cannot send
    a header, hence ?token=)."""
    daemon = ws.app.state.daemon
    if ws.app.state.reads_need_token and not token_matches(daemon.cfg.server.token, token):
        await ws.close(code=status.WS_1008_POLICY_VIOLATION, reason="telemetry needs ?token=<server.token>")
        return
    interval = min(max(interval, 0.05), 5.0)
    await ws.accept()
    try:
        while True:
            await ws.send_text(json.dumps(telemetry_message(daemon)))
            await asyncio.sleep(interval)
    except (WebSocketDisconnect, RuntimeError):
        return
