"""The OpenAPI 3.1 document of the admin API, generated from the route table's models."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from taskd.admin.api import ROUTES
from taskd.admin.schemas import ErrorBody

_PATH_PARAM = re.compile(r"{(\w+)}")


def openapi_document(version: str) -> dict[str, Any]:
    models: set[type[BaseModel]] = {ErrorBody}
    for route in ROUTES:
        models.update(m for m in (route.body, route.response) if m is not None)
    _, definitions = models_json_schema(
        [(model, "serialization") for model in sorted(models, key=lambda m: m.__name__)]
        + [(route.body, "validation") for route in ROUTES if route.body is not None],
        ref_template="#/components/schemas/{model}",
    )
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        operation: dict[str, Any] = {
            "summary": route.summary,
            "operationId": route.handler.__name__,
            "parameters": _parameters(route.path, route.query),
            "responses": _responses(route.status, route.response, route.content_type, route.errors),
        }
        if not route.public:
            operation["security"] = [{"bearer": []}]
            operation["responses"]["401"] = _error("Missing or wrong bearer token (when set)")
        # the browser guard of an endpoint without a token (server.py)
        operation["responses"]["403"] = _error(
            "No token set, and the Host or Origin is not this endpoint (DNS rebinding, CSRF)"
        )
        if route.method != "GET":
            operation["responses"]["415"] = _error(
                "No token set, and the Content-Type is not application/json"
            )
        if route.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{route.body.__name__}"}
                    }
                },
            }
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "taskd admin API",
            "version": version,
            "description": "The local admin endpoint of one taskd daemon.",
        },
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _parameters(path: str, query: type[BaseModel]) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAM.findall(path)
    ]
    schema = query.model_json_schema()
    required = set(schema.get("required", []))
    for name, prop in schema.get("properties", {}).items():
        prop = {k: v for k, v in prop.items() if k != "title"}
        parameter: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": _not_null(_inline(prop, schema.get("$defs", {}))),
        }
        if "description" in prop:
            parameter["description"] = prop["description"]
        if _is_array(parameter["schema"]):
            parameter["style"] = "form"
            parameter["explode"] = False  # status=queued,failed
        parameters.append(parameter)
    return parameters


def _inline(schema: Any, defs: dict[str, Any]) -> Any:
    """Query parameters get their enums inline (no $ref into the query model's own $defs)."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            return _inline(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
        return {k: _inline(v, defs) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_inline(item, defs) for item in schema]
    return schema


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional query parameter is absent, never null (a query string has no null): its
    ``anyOf [X, null]`` becomes X."""
    options = schema.get("anyOf")
    if not isinstance(options, list):
        return schema
    kept = [option for option in options if option != {"type": "null"}]
    rest = {k: v for k, v in schema.items() if k != "anyOf" and not (k == "default" and v is None)}
    if len(kept) == 1:
        return {**kept[0], **rest}
    return {**rest, "anyOf": kept}


def _is_array(schema: dict[str, Any]) -> bool:
    if schema.get("type") == "array":
        return True
    return any(option.get("type") == "array" for option in schema.get("anyOf", []))


def _responses(
    status: int, response: type[BaseModel] | None, content_type: str, errors: dict[int, str]
) -> dict[str, Any]:
    if response is not None:
        content = {content_type: {"schema": {"$ref": f"#/components/schemas/{response.__name__}"}}}
    else:
        content = {content_type: {"schema": {"type": "string"}}}
    responses: dict[str, Any] = {str(status): {"description": "OK", "content": content}}
    for code, description in errors.items():
        responses[str(code)] = _error(description)
    return responses


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }
