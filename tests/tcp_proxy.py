"""A TCP proxy that can cut the network between a learner and the daemon, and sees pushes pass.

Used by tests/test_process_faults.py and bench/soak.py.
"""

from __future__ import annotations

import asyncio
import threading


class PausableProxy:
    """127.0.0.1:<port> → the daemon's port, in its own thread. `cut()` is a network cut: nothing
    is forwarded either way (bytes wait, as packets wait for a retransmit) until `restore()`.
    `push_started` is set when a `PUT /policies/...` request passes; `in_flight` counts those whose
    answer has not come back yet."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.push_started = threading.Event()
        self.in_flight = 0
        self.loop = asyncio.new_event_loop()
        self._up = asyncio.Event()
        self._thread = threading.Thread(target=self.loop.run_forever, name="proxy", daemon=True)
        self._thread.start()
        self.loop.call_soon_threadsafe(self._up.set)
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self.loop
        ).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def cut(self) -> None:
        self.loop.call_soon_threadsafe(self._up.clear)

    def restore(self) -> None:
        self.loop.call_soon_threadsafe(self._up.set)

    def close(self) -> None:
        async def shutdown() -> None:
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = {"push": False}
        try:
            await self._up.wait()
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            except OSError:
                return  # the daemon is down: the client's connection closes
            await asyncio.gather(self._pipe(reader, up_writer, conn, True), self._pipe(up_reader, writer, conn, False))
        finally:
            if conn["push"]:
                self.in_flight -= 1
            writer.close()

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, conn: dict, to_daemon: bool) -> None:
        try:
            while data := await src.read(1 << 16):
                await self._up.wait()
                if to_daemon and data.startswith(b"PUT /policies/"):
                    conn["push"] = True
                    self.in_flight += 1
                    self.push_started.set()
                elif not to_daemon and conn["push"]:
                    conn["push"] = False
                    self.in_flight -= 1
                dst.write(data)
                await dst.drain()
        except OSError:
            pass
        finally:
            dst.close()
