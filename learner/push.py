"""Pushes checkpoints to the daemon with a bearer token: policies (`PUT {server}/policies/{direction}`)
and classifiers (`PUT {server}/classifiers/{direction}`, for scoring frames on the review page).

It runs in its own thread so training never waits on the network. Only the newest checkpoint
per kind and direction is kept: while the server is down the pending one is replaced by newer
versions and retried with exponential backoff (capped), never raising; pending checkpoints go out
in the order they were first submitted. Every network wait has a timeout (learner.push_timeout_s),
after which the push counts as failed and is retried. A 4xx answer is logged with the server's
message and that version is not retried (408 and 429 are); a 409 (the daemon already has that
version or a newer one) is expected after a restart and only noted. Status and version bases are
keyed by the direction for policies and by "classifiers/<direction>" for classifiers.

Versions sent are `version_base + the agent's update count` (the classifier's step count for a
classifier). A fresh learner takes its base from the daemon's active version (GET /policies or
GET /classifiers) before its first push, so a daemon still running a
previous learner's v500 accepts the new learner's policies instead of refusing them as older; a
resumed learner keeps its saved base. The same thread also sends the learner's progress to the
daemon (PUT /learner/status) every few seconds, for the operator's page.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from policies.checkpoint import PolicyCheckpoint
from policies.classifier_checkpoint import ClassifierCheckpoint

log = logging.getLogger(__name__)

Checkpoint = PolicyCheckpoint | ClassifierCheckpoint


def _route(ckpt: Checkpoint) -> str:
    return "classifiers" if isinstance(ckpt, ClassifierCheckpoint) else "policies"


def _key(ckpt: Checkpoint) -> str:
    """A policy's key is its direction (as learner state saved before classifiers were pushed)."""
    return ckpt.direction if _route(ckpt) == "policies" else f"classifiers/{ckpt.direction}"


RETRY_STATUSES = {408, 429}  # a stalled upload, a busy server: worth sending again


@dataclass
class PushStatus:
    pushed: dict[str, int] = field(default_factory=dict)  # key (see _key) -> newest accepted version
    rejected: dict[str, list[tuple[int, int, str]]] = field(default_factory=dict)  # (version, status, msg)
    superseded: int = 0  # 409s: the daemon already has this version or a newer one
    attempts: int = 0
    failures: int = 0
    last_error: str | None = None
    backoff_s: float = 0.0


class Pusher:
    def __init__(
        self,
        server: str,
        token: str,
        timeout_s: float = 30.0,
        backoff_start_s: float = 1.0,
        backoff_cap_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self.status = PushStatus()
        self._short_timeout_s = min(5.0, timeout_s)  # for the small GET /policies and status reports
        self._client = httpx.Client(
            timeout=timeout_s, transport=transport, headers={"Authorization": f"Bearer {token}"}
        )
        self._backoff_start, self._backoff_cap = backoff_start_s, backoff_cap_s
        self._pending: dict[str, Checkpoint] = {}  # key -> newest; dict order = first submitted
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self.version_base: dict[str, int] = {}
        self.report_every_s = 5.0
        self._report: dict[str, Any] | None = None
        self._last_report = -float("inf")
        self._thread = threading.Thread(target=self._run, name="policy-push", daemon=True)
        self._thread.start()

    def report(self, step: int, metrics: dict[str, float], backlog: dict[str, Any] | None = None) -> None:
        """Latest progress for PUT /learner/status (`backlog`: Trainer.backlog()); only the newest
        is sent, never retried."""
        with self._cond:
            self._report = {"step": int(step), "metrics": {k: float(v) for k, v in metrics.items()}} | (backlog or {})

    def submit(self, ckpt: Checkpoint) -> None:
        with self._cond:
            old = self._pending.get(_key(ckpt))
            if old is None or ckpt.version > old.version:
                self._pending[_key(ckpt)] = ckpt
            self._idle.clear()
            self._cond.notify()

    def wait_idle(self, timeout: float) -> bool:
        """True once nothing is pending (tests, shutdown)."""
        return self._idle.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout)
        self._client.close()

    # --- the push thread ---
    def _take(self) -> Checkpoint | None:
        with self._cond:
            while not self._pending and not self._stop.is_set():
                self._idle.set()
                self._cond.release()
                try:
                    self._send_report()
                finally:
                    self._cond.acquire()
                self._cond.wait(timeout=1.0)
            if self._stop.is_set():
                return None
            return self._pending.pop(next(iter(self._pending)))

    def _requeue(self, ckpt: Checkpoint) -> None:
        with self._cond:
            if _key(ckpt) not in self._pending:  # a newer one submitted meanwhile wins
                self._pending[_key(ckpt)] = ckpt

    def _run(self) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            ckpt = self._take()
            if ckpt is None:
                return
            ok = self._push(ckpt)
            if ok is None:  # retryable: server down or erroring
                self._requeue(ckpt)
                backoff = min(self._backoff_cap, max(self._backoff_start, 2 * backoff))
                self.status.backoff_s = backoff
                self._stop.wait(backoff)
            else:
                backoff = 0.0
                self.status.backoff_s = 0.0

    def _base(self, ckpt: Checkpoint) -> int | None:
        """The version this learner's numbering starts above; None while the daemon is unreachable."""
        key, route, direction = _key(ckpt), _route(ckpt), ckpt.direction
        if key in self.version_base:
            return self.version_base[key]
        try:
            resp = self._client.get(f"{self.server}/{route}", timeout=self._short_timeout_s)
        except httpx.HTTPError as exc:
            self.status.last_error = f"GET /{route}: {exc}"
            return None
        if resp.status_code >= 500:
            self.status.last_error = f"GET /{route}: HTTP {resp.status_code}"
            return None
        try:
            active = resp.json().get(direction)
            base = int(active["version"]) if isinstance(active, dict) else 0
        except (ValueError, AttributeError, KeyError, TypeError):
            log.warning("GET /%s gave no versions (HTTP %d); numbering from 0", route, resp.status_code)
            base = 0
        self.version_base[key] = base
        if base:
            log.info("the daemon has %s v%d: this learner's versions continue above it", key, base)
        return base

    def _send_report(self) -> None:
        with self._cond:
            report, due = self._report, time.monotonic() - self._last_report >= self.report_every_s
            if report is None or not due:
                return
            self._report = None
        self._last_report = time.monotonic()
        # Best effort: the next report replaces this one.
        with contextlib.suppress(httpx.HTTPError):
            self._client.put(f"{self.server}/learner/status", json=report, timeout=self._short_timeout_s)

    def _push(self, ckpt: Checkpoint) -> bool | None:
        """True accepted, False refused for good (4xx), None retry later."""
        base = self._base(ckpt)
        if base is None:
            self.status.failures += 1
            return None
        if base:
            ckpt = replace(ckpt, version=base + ckpt.version)
        key, what = _key(ckpt), "policy" if _route(ckpt) == "policies" else "classifier"
        url = f"{self.server}/{_route(ckpt)}/{ckpt.direction}"
        self.status.attempts += 1
        try:
            data = ckpt.to_bytes()
            resp = self._client.put(url, content=data, headers={"Content-Type": "application/octet-stream"})
        except httpx.HTTPError as exc:
            self.status.failures += 1
            self.status.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("push %s v%d to %s failed (%s); will retry", key, ckpt.version, url, exc)
            return None
        if resp.is_success:
            self.status.pushed[key] = max(self.status.pushed.get(key, -1), ckpt.version)
            log.info("pushed %s %s v%d (%.1f MB)", ckpt.direction, what, ckpt.version, len(data) / 1e6)
            return True
        msg = _message(resp)
        if resp.status_code == 409:
            # Expected after a restart (this learner resumed from a save older than its last push) or a
            # push whose answer was lost with the connection: the next newer version goes through.
            self.status.superseded += 1
            log.info("the daemon already has %s v%d or newer (%s); not retried", key, ckpt.version, msg)
            return False
        self.status.failures += 1
        self.status.last_error = f"HTTP {resp.status_code}: {msg}"
        if 400 <= resp.status_code < 500 and resp.status_code not in RETRY_STATUSES:
            self.status.rejected.setdefault(key, []).append((ckpt.version, resp.status_code, msg))
            log.error("server refused %s %s v%d: HTTP %d %s", ckpt.direction, what, ckpt.version, resp.status_code, msg)
            return False
        log.warning("server error for %s v%d: HTTP %d %s; will retry", key, ckpt.version, resp.status_code, msg)
        return None


def _message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:500]
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])[:500]
    return str(body)[:500]
