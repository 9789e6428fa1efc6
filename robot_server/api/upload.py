"""Reading an uploaded checkpoint body with a size limit and a time limit, before any of it is parsed."""

from __future__ import annotations

import asyncio
import logging

from fastapi import HTTPException, Request, status
from starlette.requests import ClientDisconnect

log = logging.getLogger(__name__)


async def read_checkpoint_body(request: Request, limit: int, stall_s: float) -> bytes:
    """The raw body, or 413 as soon as it (or its declared length) exceeds `limit` bytes; 400 if
    empty or broken off; 408 if no byte came for `stall_s` seconds."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, f"checkpoint larger than {limit} bytes")
    body = bytearray()
    chunks = request.stream().__aiter__()
    while True:
        # A learner whose network drops mid-upload never sends the rest; nothing else would end this wait.
        try:
            chunk = await asyncio.wait_for(anext(chunks), stall_s)
        except StopAsyncIteration:
            break
        except TimeoutError:
            raise HTTPException(status.HTTP_408_REQUEST_TIMEOUT,
                                f"checkpoint upload stalled for {stall_s:g} s after {len(body)} bytes") from None
        except ClientDisconnect:
            # A learner killed or cut off mid-upload: it sends the checkpoint again; not a server error.
            log.warning("%s upload broken off after %d bytes (the client disconnected)", request.url.path, len(body))
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "the upload was broken off") from None
        body += chunk
        if len(body) > limit:
            raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, f"checkpoint larger than {limit} bytes")
    if not body:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "empty body: send the checkpoint bytes")
    return bytes(body)
