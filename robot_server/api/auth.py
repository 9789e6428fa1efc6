"""Bearer-token checks: every call that moves the robot or changes state needs the token."""

from __future__ import annotations

import hmac

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

_bearer = HTTPBearer(auto_error=False, description="server.token from the robot's config")


def _check(request: Request, creds: HTTPAuthorizationCredentials | None) -> None:
    token = request.app.state.daemon.cfg.server.token
    if creds is None or creds.scheme.lower() != "bearer":
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token: send 'Authorization: Bearer <server.token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(creds.credentials.encode(), token.encode()):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "wrong bearer token")


def require_token(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:
    _check(request, creds)


def read_access(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:
    if request.app.state.daemon.cfg.server.protect_reads:
        _check(request, creds)
