"""The one-writer rule on an object store: a lock object with owner and heartbeat, kept by conditional PUTs.

`<prefix>/writer-lock.json` holds {owner, pid, host, heartbeat_at, lease_s}. It is created with
`If-None-Match: *` (only one of two racing writers gets it), renewed every lease/3 s with
`If-Match: <our ETag>`, and deleted with `If-Match` on close. A lock whose heartbeat is older than its
lease, or whose holder is a dead pid on this very host (a kill -9 on the same machine), is taken
over with `If-Match: <its ETag>`, so of two writers taking over the same stale lock one wins.
A writer whose renewal finds the object changed has lost the lock: it reports itself closed
(`held` False) and its writes stop. Hosts' clocks are assumed within a lease of each other.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from replay.schema import StoreLockedError

if TYPE_CHECKING:
    from replay.location import S3Location

log = logging.getLogger(__name__)

LOCK_KEY = "writer-lock.json"


def _precondition_failed(exc: Exception) -> bool:
    # s3fs maps HTTP 412 to FileExistsError (If-None-Match) or an OSError naming the precondition (If-Match).
    return isinstance(exc, FileExistsError) or "pre-condition" in str(exc).lower() or "precondition" in str(exc).lower()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class S3WriterLock:
    def __init__(self, location: S3Location) -> None:
        self.location = location
        self.lease_s = location.options.lock_lease_s
        self.owner = uuid.uuid4().hex
        self._key = location.key(LOCK_KEY)
        self._etag: str | None = None
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._acquire()
        self._thread = threading.Thread(target=self._heartbeat, name="store-lock-heartbeat", daemon=True)
        self._thread.start()

    @staticmethod
    def holder_record() -> dict[str, Any]:
        return {"pid": os.getpid(), "host": socket.gethostname(), "opened_at": time.time()}

    @property
    def held(self) -> bool:
        return self._etag is not None

    def _body(self) -> bytes:
        record = {**self.holder_record(), "owner": self.owner, "heartbeat_at": time.time(), "lease_s": self.lease_s}
        return json.dumps(record).encode()

    def _put(self, **condition: str) -> str:
        resp = self.location.fs.call_s3(
            "put_object", Bucket=self.location.bucket, Key=self._key, Body=self._body(), **condition
        )
        return str(resp["ETag"])

    def _current(self) -> tuple[dict[str, Any], str] | None:
        try:
            resp = self.location.fs.call_s3("get_object", Bucket=self.location.bucket, Key=self._key)
        except FileNotFoundError:
            return None
        raw = _read_body(self.location.fs, resp["Body"])
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError):
            record = {}
        return (record if isinstance(record, dict) else {}), str(resp["ETag"])

    def _acquire(self) -> None:
        for _ in range(3):  # the holder may release or be taken over between our calls
            try:
                self._etag = self._put(IfNoneMatch="*")
                return
            except OSError as exc:
                if not _precondition_failed(exc):
                    raise
            current = self._current()
            if current is None:
                continue
            record, etag = current
            why = self._stale(record)
            if why is None:
                pid = record.get("pid") if isinstance(record.get("pid"), int) else None
                raise StoreLockedError(
                    f"replay store {self.location.url} is already open for writing by pid {pid} on "
                    f"{record.get('host', '?')} (heartbeat {time.time() - float(record.get('heartbeat_at', 0)):.0f} s ago, "
                    f"lease {record.get('lease_s')} s); only one writer per prefix is allowed",
                    pid,
                )
            try:
                self._etag = self._put(IfMatch=etag)
                log.warning("took over the writer lock of %s: %s", self.location.url, why)
                return
            except OSError as exc:
                if not _precondition_failed(exc):
                    raise
        raise StoreLockedError(f"replay store {self.location.url}: the writer lock keeps changing hands", None)

    def _stale(self, record: dict[str, Any]) -> str | None:
        """Why the recorded holder no longer holds the lock, or None if it may still."""
        try:
            age = time.time() - float(record["heartbeat_at"])
            lease = float(record.get("lease_s", self.lease_s))
        except (KeyError, TypeError, ValueError):
            return "the lock object is unreadable"
        if age > lease:
            return f"its heartbeat is {age:.0f} s old (lease {lease:.0f} s)"
        pid = record.get("pid")
        if record.get("host") == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid):
            return f"its holder, pid {pid} on this host, is dead"
        return None

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            with self._mutex:
                if self._etag is None:
                    return
                try:
                    self._etag = self._put(IfMatch=self._etag)
                except OSError as exc:
                    if _precondition_failed(exc):
                        log.error("lost the writer lock of %s: another writer took it over", self.location.url)
                        self._etag = None
                        return
                    log.warning("renewing the writer lock of %s failed (%s); retrying", self.location.url, exc)

    def release(self) -> None:
        self._stop.set()
        with self._mutex:
            if self._etag is None:
                return
            etag, self._etag = self._etag, None
            try:
                self.location.fs.call_s3("delete_object", Bucket=self.location.bucket, Key=self._key, IfMatch=etag)
            except OSError as exc:  # taken over meanwhile, or the store is unreachable: the lease ends it
                log.warning("releasing the writer lock of %s: %s", self.location.url, exc)


def _read_body(fs: Any, body: Any) -> bytes:
    """Read an aiobotocore streaming body on s3fs's event loop."""
    from fsspec.asyn import sync

    async def read() -> bytes:
        async with body:
            return await body.read()

    return sync(fs.loop, read)
