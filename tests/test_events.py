"""Interventions, resets and help requests are events the store keeps: they outlive the daemon and
are kept whether or not a segment is being recorded (replay.event_log)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.daemon_proc import running_daemon, wait_for

pytestmark = pytest.mark.timeout(240)


def test_events_outlive_a_daemon_restart(tmp_path: Path) -> None:
    work = tmp_path / "daemon"
    with running_daemon(work) as d, d.client() as api:
        # Idle, no segment open: this one used to live only in memory.
        r = api.post("/interventions", json={"reason": "moved the cube by hand"})
        assert r.status_code == 201, r.text
        r = api.post("/sessions", json={"policy": "hold", "phase_steps": 10, "max_steps": 25, "home_every": 0,
                                        "home_at_start": False})
        assert r.status_code == 201, r.text
        session = r.json()["id"]
        r = api.post("/sessions/current/reset-request", json={"reason": "cube stuck"})
        assert r.status_code == 200, r.text
        wait_for(lambda: api.get("/sessions/last").status_code == 200, 60, what="the session to end")
        # The manual reset happens at the switch to forward, between two segments.
        wait_for(lambda: api.get("/status").json()["store"]["events_logged"] >= 3, 10, what="events stored")

    with running_daemon(work) as d, d.client() as api:  # the same store, a fresh process
        listed = api.get("/interventions").json()
        assert listed["counters"]["interventions"] == 0, "counters start again; the store remembers"
        assert [(e["kind"], e["reason"], e["session"]) for e in listed["stored"]] == [
            ("operator", "moved the cube by hand", None),
            ("manual_reset", "cube stuck", session),
        ]
        assert listed["stored_total"] == 2 and listed["stored"][1]["step"] == 20
        # The first daemon's stop also stored its loop's last timing window (tick_stats, seq 3): the
        # log lists it only when asked for by type, so the loop's telemetry never buries these.
        events = api.get("/events").json()["events"]
        assert [e["type"] for e in events] == ["intervention", "reset_requested", "intervention"]
        assert [e["seq"] for e in events] == [0, 1, 2]
        ticks = api.get("/events", params={"type": "tick_stats"}).json()["events"]
        assert [e["seq"] for e in ticks] == [3] and ticks[0]["ticks"] > 0
        r = api.get("/events", params={"type": "reset_requested"})
        assert r.status_code == 200 and [e["reason"] for e in r.json()["events"]] == ["cube stuck"]
        assert [e["seq"] for e in api.get("/events", params={"since_seq": 2}).json()["events"]] == [2]
        for bad in ({"type": "session_started"}, {"type": "bogus"}, {"limit": 0}, {"since_seq": -1}):
            r = api.get("/events", params=bad)
            assert r.status_code == 422 and r.json()["detail"], bad
