"""Reading an uploaded checkpoint body with a size limit, before any of it is parsed."""

from __future__ import annotations

from fastapi import HTTPException, Request, status


async def read_checkpoint_body(request: Request, limit: int) -> bytes:
    """The raw body, or 413 as soon as it (or its declared length) exceeds `limit` bytes; 400 if empty."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, f"checkpoint larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, f"checkpoint larger than {limit} bytes")
    if not body:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "empty body: send the checkpoint bytes")
    return bytes(body)
