"""Bearer-token checks. Every call that moves the robot or changes state needs the token; reads need
it too unless the server binds to loopback only (spec.config.ServerConfig.read_access).

The app decides once, at creation, whether reads need the token (`app.state.reads_need_token`):
the same flag drives these checks and the OpenAPI document (robot_server.api.openapi), so the
document always says what the server does.
"""

from __future__ import annotations

import hmac

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer

BEARER_SCHEME = "HTTPBearer"
READ_SCHEME = "ReadToken"  # a placeholder: the document makes it HTTPBearer or drops it (api.openapi)
QUERY_SCHEME = "TokenQuery"

_bearer = HTTPBearer(auto_error=False, scheme_name=BEARER_SCHEME, description="server.token from the robot's config")
_read_bearer = HTTPBearer(auto_error=False, scheme_name=READ_SCHEME)
# Browsers cannot put a header on an <img> MJPEG stream or a WebSocket: those two take ?token=.
# Only there: a token in a URL can end up in a browser's history.
_query_token = APIKeyQuery(
    name="token",
    scheme_name=QUERY_SCHEME,
    auto_error=False,
    description="server.token as a query parameter: only for the MJPEG stream (and the telemetry WebSocket)",
)


def token_matches(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def reads_need_token(request: Request) -> bool:
    return bool(request.app.state.reads_need_token)


def _check(request: Request, creds: HTTPAuthorizationCredentials | None) -> None:
    token = request.app.state.daemon.cfg.server.token
    if creds is None or creds.scheme.lower() != "bearer":
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token: send 'Authorization: Bearer <server.token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not token_matches(token, creds.credentials):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "wrong bearer token")


def require_token(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:
    _check(request, creds)


def read_access(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(_read_bearer)) -> None:
    if reads_need_token(request):
        _check(request, creds)


def stream_access(
    request: Request,
    creds: HTTPAuthorizationCredentials | None = Depends(_read_bearer),
    token: str | None = Depends(_query_token),
) -> None:
    """A read that may carry the token as ?token= instead of the header (the page's <img> streams)."""
    if not reads_need_token(request):
        return
    if creds is None and token is not None:
        if not token_matches(request.app.state.daemon.cfg.server.token, token):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "wrong token")
        return
    _check(request, creds)
