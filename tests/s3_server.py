"""An S3-compatible server for tests: moto's server mode as a real subprocess on a free port.

Not in-process mocking: the store talks HTTP to it exactly as to MinIO or AWS. Its objects live in
the server's memory, so they outlive the processes that write them (a killed daemon's store is
still there for its restart) but not the server.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx

from tests.daemon_proc import free_port

START_TIMEOUT_S = 30.0
# Any values do for moto; the standard variables are what boto, s3fs and the daemon read.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class S3Server:
    endpoint_url: str
    proc: subprocess.Popen

    def env(self) -> dict[str, str]:
        """Environment for a child process that uses this server."""
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint_url}

    def create_bucket(self, name: str) -> None:
        import s3fs

        fs = s3fs.S3FileSystem(endpoint_url=self.endpoint_url, key="testing", secret="testing")
        fs.call_s3("create_bucket", Bucket=name)


@contextlib.contextmanager
def s3_server(log_path: str | os.PathLike[str] | None = None) -> Iterator[S3Server]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **CREDENTIALS},
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {proc.returncode} (log: {log_path})")
            try:
                httpx.get(f"{url}/moto-api/", timeout=1.0)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not answer on {url} within {START_TIMEOUT_S} s") from None
                time.sleep(0.1)
        yield S3Server(url, proc)
    finally:
        proc.kill()
        proc.wait(10)
        if out is not subprocess.DEVNULL:
            out.close()
