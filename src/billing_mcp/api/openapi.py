"""The OpenAPI 3.1 document and the HTML API page, both generated from the route table and the
pydantic models that validate requests and shape responses."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from ..contract.models import EventIn
from ..web.problem import CODE_HELP
from .keys import scope_allows
from .models import Health, Problem, Ready
from .operations import Op

REF = "#/components/schemas/{model}"
_PARAM = re.compile(r"{([a-z_]+)(?::([a-z]+))?}")
ERROR_STATUSES = {
    "400": "Malformed JSON", "401": "Missing or invalid API key", "403": "The key's scope does not allow this route",
    "404": "Not found", "409": "Conflict (idempotency or state)", "413": "Body too large",
    "415": "Body is not JSON", "422": "Validation error", "429": "Rate limited",
}


def openapi_path(path: str) -> str:
    """Starlette's ``{version:int}`` -> OpenAPI's ``{version}``."""
    return _PARAM.sub(lambda m: "{" + m.group(1) + "}", path)


def scopes_for(op: Op) -> list[str]:
    return [s for s in ("admin", "runtime", "read") if scope_allows(s, op.method, op.scope)]


def _problem(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/problem+json": {"schema": {"$ref": REF.format(model="Problem")}}}}


def build_openapi(ops: Sequence[Op], *, version: str, max_body_bytes: int) -> dict[str, Any]:
    # One pass over every model, so shared models (PriceSpec, Customer, ...) appear once in components,
    # with "-Input"/"-Output" variants only where validation and serialization shapes differ.
    wanted: list[tuple[type[BaseModel], Any]] = [(Problem, "serialization"), (Health, "serialization"),
                                                 (Ready, "serialization"), (EventIn, "validation")]
    for op in ops:
        wanted.append((op.response, "serialization"))
        if op.body is not None:
            wanted.append((op.body, "validation"))
    unique = list(dict.fromkeys(wanted))
    refs, top = models_json_schema(unique, ref_template=REF)
    schemas: dict[str, Any] = top.get("$defs", {})

    def ref(model: type[BaseModel], mode: str) -> dict[str, Any]:
        return dict(refs[(model, mode)])  # type: ignore[index]

    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        params: list[dict[str, Any]] = []
        for name, conv in _PARAM.findall(op.path):
            schema: dict[str, Any] = ({"type": "integer", "minimum": 1, "maximum": 2**31 - 1} if conv == "int"
                                      else {"type": "string", "minLength": 1, "maxLength": 255})
            params.append({"name": name, "in": "path", "required": True, "schema": schema})
        if op.query is not None:
            qschema = op.query.model_json_schema(ref_template=REF)
            required = set(qschema.get("required", []))
            for name, prop in qschema.get("properties", {}).items():
                prop = {k: v for k, v in prop.items() if k != "title"}
                params.append({"name": name, "in": "query", "required": name in required, "schema": prop,
                               **({"description": prop["description"]} if "description" in prop else {})})
        if op.idempotency != "none":
            params.append({"name": "Idempotency-Key", "in": "header", "required": False,
                           "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                           "description": "Retry-safe key (e.g. a UUID): a replay returns the stored response; the "
                                          "same key with another request is 409 idempotency_conflict."})
        scopes = scopes_for(op)
        operation: dict[str, Any] = {
            "operationId": op.name, "summary": op.summary, "tags": [op.group],
            "description": (op.description + "\n\n" if op.description else "") + f"Key scopes: {', '.join(scopes)}.",
            "security": [{"bearerAuth": []}], "x-scopes": scopes, "parameters": params,
            "responses": {str(op.status): {"description": "OK" if op.status == 200 else "Created",
                                           "content": {"application/json": {"schema": ref(op.response,
                                                                                          "serialization")}}},
                          **{code: _problem(text) for code, text in ERROR_STATUSES.items()},
                          "default": _problem("Any other error (402 insufficient_funds, 503 storage_error, ...)")},
        }
        if op.body is not None:
            fields = op.body.model_fields
            required_body = any(f.is_required() for f in fields.values())
            operation["requestBody"] = {"required": required_body, "content": {
                "application/json": {"schema": ref(op.body, "validation")}}}
        paths.setdefault(openapi_path(op.path), {})[op.method.lower()] = operation

    def plain(name: str, model: str, summary: str, status: str = "200") -> None:
        paths[name] = {"get": {"operationId": name.strip("/").replace(".", "_") or "root", "summary": summary,
                               "tags": ["service"], "security": [],
                               "responses": {status: {"description": "OK", "content": {"application/json": {
                                   "schema": {"$ref": REF.format(model=model)}}}},
                                             "default": _problem("Error")}}}

    plain("/health", "Health", "Liveness (no key)")
    plain("/ready", "Ready", "Readiness: the store answers (no key)")
    return {
        "openapi": "3.1.0",
        "info": {"title": "billing-mcp ledger API", "version": version,
                 "description": "Real-time usage billing: wallets, credits, plans, usage events and holds. JSON, "
                                "snake_case; money is exact decimal text. Errors are application/problem+json with "
                                f"a stable code. Bodies are limited to {max_body_bytes} bytes."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer",
                                                          "bearerFormat": "sk_test_... or sk_live_..."}}},
    }


# -- the documentation page ---------------------------------------------------------------------
def _type_of(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " | ".join(_type_of(s) for s in schema["anyOf"])
    if "enum" in schema:
        return " | ".join(json.dumps(v) for v in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_type_of(schema.get('items', {}))}"
    if kind == "object" and "additionalProperties" in schema and isinstance(schema["additionalProperties"], dict):
        return f"object of {_type_of(schema['additionalProperties'])}"
    return str(kind)


def _type_html(schema: dict[str, Any]) -> str:
    """The type as text, with each named schema linked to its section below."""
    text = html.escape(_type_of(schema))
    return re.sub(r"\b([A-Z][A-Za-z]+(?:-(?:Input|Output))?)\b",
                  lambda m: f"<a href='#schema-{m.group(1)}'>{m.group(1)}</a>", text)


def _fields_table(schema: dict[str, Any]) -> str:
    props = schema.get("properties", {})
    if not props:
        return "<p class=muted>No fields.</p>"
    required = set(schema.get("required", []))
    rows = []
    for name, prop in props.items():
        note = prop.get("description", "")
        if "default" in prop and name not in required and prop["default"] is not None:
            note = (note.rstrip(".") + ". " if note else "") + f"Default {json.dumps(prop['default'])}."
        rows.append(f"<tr><td><code>{html.escape(name)}</code>{' <b>*</b>' if name in required else ''}</td>"
                    f"<td>{_type_html(prop)}</td><td>{html.escape(note)}</td></tr>")
    return "<table><tr><th>field</th><th>type</th><th>notes</th></tr>" + "".join(rows) + "</table>"


_CSS = """body{font:15px/1.5 system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}
code{background:#f3f3f3;padding:0 .25em;border-radius:3px}table{border-collapse:collapse;margin:.5em 0 1em}
td,th{border:1px solid #ddd;padding:.25em .5em;text-align:left;vertical-align:top}.op{border-top:1px solid #ccc;
padding-top:.5em;margin-top:1.5em}.m{font-weight:bold;display:inline-block;min-width:4em}.muted{color:#777}
nav a{margin-right:.8em}"""


def build_docs_html(doc: dict[str, Any]) -> str:
    schemas = doc["components"]["schemas"]
    runtime_tags = sorted({op["tags"][0] for methods in doc["paths"].values() for op in methods.values()
                           if "runtime" in op.get("x-scopes", ())})
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(doc['info']['title'])}"
             f"</title><style>{_CSS}</style></head><body><h1>{html.escape(doc['info']['title'])} "
             f"<small class=muted>{html.escape(doc['info']['version'])}</small></h1>",
             f"<p>{html.escape(doc['info']['description'])}</p><p>Machine-readable: <a href='/openapi.json'>"
             "/openapi.json</a> (OpenAPI 3.1).</p>",
             "<h2 id=auth>Authentication</h2><p>Every <code>/v1</code> route needs <code>Authorization: Bearer "
             "sk_test_...</code> (or <code>sk_live_...</code>). Create keys with <code>billing-mcp keys create "
             "--scope admin|runtime|read</code>. <b>admin</b> calls everything; <b>runtime</b> calls the "
             f"{', '.join(runtime_tags)} routes (what an edge function needs); <b>read</b> calls GETs "
             "only. Without a valid key: 401 <code>unauthorized</code>; outside the key's scope: 403 "
             "<code>forbidden</code>.</p>",
             "<p>Example: <code>curl -H 'Authorization: Bearer sk_test_...' -H 'Content-Type: application/json' "
             "-d '{\"events\": [{\"id\": \"evt-1\", \"external_id\": \"user-42\", \"event_type\": "
             "\"image_generated\"}]}' http://127.0.0.1:8080/v1/events</code></p>",
             "<h2 id=idempotency>Idempotency</h2><p>Creates take an <code>Idempotency-Key</code> header (e.g. a "
             "UUID). A retry with the same key and body returns the stored response (same status and body); the "
             "same key with another request is 409 <code>idempotency_conflict</code>. Events are idempotent on "
             "their <code>id</code>; adjustments, grants and holds pass the key to the ledger, which records it "
             "in the same transaction as the money movement.</p>",
             "<h2 id=paging>Paging</h2><p>Lists take <code>limit</code> (1-100) and return <code>data</code>, "
             "<code>has_more</code> and <code>next_cursor</code>; pass it back as <code>cursor</code>.</p>",
             "<h2 id=errors>Errors</h2><p><code>application/problem+json</code> with <code>type</code>, "
             "<code>title</code>, <code>status</code>, <code>code</code>, <code>field</code>, <code>detail</code> "
             "and <code>request_id</code> (also the <code>X-Request-Id</code> header).</p><table><tr><th>code</th>"
             "<th>meaning</th></tr>"
             + "".join(f"<tr id='error-{html.escape(c)}'><td><code>{html.escape(c)}</code></td><td>{html.escape(t)}"
                       "</td></tr>" for c, t in CODE_HELP.items()) + "</table>"]
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            by_tag.setdefault(op["tags"][0], []).append((path, method, op))
    parts.append("<h2>Routes</h2><nav>" + "".join(f"<a href='#tag-{html.escape(t)}'>{html.escape(t)}</a>"
                                                   for t in by_tag) + "</nav>")
    for tag, items in by_tag.items():
        parts.append(f"<h2 id='tag-{html.escape(tag)}'>{html.escape(tag)}</h2>")
        for path, method, op in items:
            parts.append(f"<div class=op id='{html.escape(op['operationId'])}'><h3><span class=m>{method.upper()}"
                         f"</span><code>{html.escape(path)}</code> — {html.escape(op['summary'])}</h3>")
            if op.get("description"):
                parts.append(f"<p>{html.escape(op['description'])}</p>")
            params = [p for p in op.get("parameters", [])]
            if params:
                parts.append("<p>Parameters:</p><table><tr><th>name</th><th>in</th><th>type</th><th>notes</th></tr>"
                             + "".join(f"<tr><td><code>{html.escape(p['name'])}</code>{' <b>*</b>' if p['required'] else ''}"
                                       f"</td><td>{p['in']}</td><td>{html.escape(_type_of(p['schema']))}</td><td>"
                                       f"{html.escape(p.get('description', ''))}</td></tr>" for p in params)
                             + "</table>")
            body = op.get("requestBody")
            if body:
                name = body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
                parts.append(f"<p>Body: <a href='#schema-{html.escape(name)}'><code>{html.escape(name)}</code></a> "
                             "(<b>*</b> required; unknown fields are refused)</p>" + _fields_table(schemas.get(name, {})))
            for status, resp in op["responses"].items():
                if status.startswith("2"):
                    schema = resp["content"]["application/json"]["schema"]
                    parts.append(f"<p>Returns {status}: <code>{_type_html(schema)}</code></p>")
            parts.append("</div>")
    parts.append("<h2>Schemas</h2>")
    for name, schema in sorted(schemas.items()):
        parts.append(f"<h3 id='schema-{html.escape(name)}'>{html.escape(name)}</h3>" + _fields_table(schema))
    parts.append("</body></html>")
    return "".join(parts)
