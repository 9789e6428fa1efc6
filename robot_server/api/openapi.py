"""The OpenAPI document, made to say what the server does (checked by schemathesis in the tests).

FastAPI derives paths, parameters, bodies and replies from the routes. Two things it cannot know,
so they are settled here, once for every route:
- who needs the token. Writes check it always; reads (auth.read_access, auth.stream_access) only
  when the app's server config says so. Reads declare a placeholder scheme (READ_SCHEME), which
  becomes the bearer scheme when reads need the token and disappears when they are open. Every
  operation that ends up with a scheme also documents the 401 and 403 the check answers.
- the body of a 422: this API's InvalidRequest (app.py's handler), not FastAPI's default; and
  the 400 FastAPI answers, before any check, to a JSON body that is not even text.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from robot_server.api.auth import BEARER_SCHEME, QUERY_SCHEME, READ_SCHEME
from robot_server.api.models import InvalidRequest, Problem

REF = "#/components/schemas/"


def install(app: FastAPI, reads_need_token: bool) -> None:
    """Serve the finished document at /openapi.json and /docs."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            finish(doc, reads_need_token)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend it


def finish(doc: dict[str, Any], reads_need_token: bool) -> None:
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    _add_model(schemas, Problem)
    _add_model(schemas, InvalidRequest)
    for path_item in doc.get("paths", {}).values():
        for op in path_item.values():
            _settle_auth(op, reads_need_token)
            _use_invalid_request(op)
            if "application/json" in op.get("requestBody", {}).get("content", {}):
                op["responses"].setdefault(
                    "400",
                    {"description": "the body could not be read as JSON text",
                     "content": {"application/json": {"schema": {"$ref": REF + "Problem"}}}},
                )
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemes = doc["components"].get("securitySchemes", {})
    schemes.pop(READ_SCHEME, None)
    if not reads_need_token:
        schemes.pop(QUERY_SCHEME, None)


def _settle_auth(op: dict[str, Any], reads_need_token: bool) -> None:
    requirements: list[dict[str, list[str]]] = op.get("security") or []
    if not requirements:
        return
    read_only = {READ_SCHEME, QUERY_SCHEME}
    if reads_need_token:
        renamed = [{(BEARER_SCHEME if k == READ_SCHEME else k): v for k, v in r.items()} for r in requirements]
        requirements = [r for i, r in enumerate(renamed) if r not in renamed[:i]]
    else:
        requirements = [r for r in requirements if not set(r) <= read_only]
    if not requirements:
        del op["security"]
        return
    op["security"] = requirements
    responses = op.setdefault("responses", {})
    responses.setdefault(
        "401",
        {
            "description": "no token was sent",
            "headers": {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
            "content": {"application/json": {"schema": {"$ref": REF + "Problem"}}},
        },
    )
    responses.setdefault(
        "403",
        {"description": "the token is wrong", "content": {"application/json": {"schema": {"$ref": REF + "Problem"}}}},
    )


def _use_invalid_request(op: dict[str, Any]) -> None:
    reply = op.get("responses", {}).get("422")
    if reply is not None:
        reply["content"] = {"application/json": {"schema": {"$ref": REF + "InvalidRequest"}}}


def _add_model(schemas: dict[str, Any], model: type[BaseModel]) -> None:
    schema = model.model_json_schema(ref_template=REF + "{model}", mode="serialization")
    for name, sub in schema.pop("$defs", {}).items():
        schemas.setdefault(name, sub)
    schemas.setdefault(model.__name__, schema)
