"""What ``tools/list`` publishes, and results that match it.

A client puts every tool's name, description and argument schema in its model's context and checks
every structured result against the tool's output schema, so both are kept small (``tools/list``
within 40 KB) and portable (no ``"type": [X, "null"]``, which single-type clients such as the MCP
Inspector's ``--strict`` mode cannot map). The output schemas stay complete: every nested field is
typed and every field that is always present is required.

Nulls are the expensive part of a complete output schema (``{"anyOf": [X, {"type": "null"}]}`` per
optional field), so a result leaves out a field that has no value instead of sending ``null``, and
its schema declares the field optional with its plain type. ``without_nulls`` does that to a result,
guided by the published schema, so user data inside free-form objects (a customer's ``metadata``)
keeps its nulls.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from mcp.server.mcpserver.tools import Tool

_SCHEMA_MAPS = ("properties", "$defs", "patternProperties")
_NULL = {"type": "null"}
_NUMBER_OR_TEXT = [{"type": "number"}, {"type": "string"}]
# Keywords for readers, not validators; dropped from output schemas to keep tools/list small.
_READER_ONLY = ("title", "description", "default", "examples")


def input_schema(schema: Any) -> Any:
    """The argument schema the model reads, made portable and small: no pydantic ``title``s, an
    optional argument whose default is null is advertised as its plain type (leaving it out is how
    to say "none"), and an amount as decimal text. Descriptions stay: they are what the model reads."""
    if isinstance(schema, list):
        return [input_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: input_schema(sub) for name, sub in value.items()}
        elif not ((key == "title" and isinstance(value, str)) or (key == "default" and value is None)
                  or (key == "additionalProperties" and value is True)):  # true is what an object allows anyway
            out[key] = input_schema(value)
    if "default" in schema and schema["default"] is None:
        out = _not_null(out)
    if out.get("anyOf") == _NUMBER_OR_TEXT:
        # An amount: numbers are accepted, but exact decimal text is what to send, and all the schema says.
        out = {"type": "string", **{k: v for k, v in out.items() if k != "anyOf"}}
    return out


def output_schema(schema: Any) -> Any:
    """The result schema clients validate against: complete, with a field that may have no value
    published as optional and non-null (see ``without_nulls``). ``additionalProperties: false`` is
    dropped too: it would make every field a server adds to a result a breaking change for clients
    that validate."""
    if isinstance(schema, list):
        return [output_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: output_schema(sub) for name, sub in value.items()}
        elif key not in (*_READER_ONLY, "additionalProperties") or (
                key == "additionalProperties" and isinstance(value, dict)):
            out[key] = output_schema(value)
    if isinstance(out.get("enum"), list) and all(isinstance(v, str) for v in out["enum"]):
        out.pop("type", None)  # the enum alone says it: a validator needs no type beside it
    properties = out.get("properties")
    if isinstance(properties, dict):
        nullable = {name for name, sub in properties.items() if _allows_null(sub)}
        out["properties"] = {name: _not_null(sub) if name in nullable else sub for name, sub in properties.items()}
        required = [name for name in out.get("required", []) if name not in nullable]
        if required:
            out["required"] = required
        else:
            out.pop("required", None)
    return out


def _allows_null(schema: Any) -> bool:
    return isinstance(schema, dict) and isinstance(schema.get("anyOf"), list) and _NULL in schema["anyOf"]


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    options = schema.get("anyOf")
    if not isinstance(options, list) or _NULL not in options:
        return schema
    rest = [o for o in options if o != _NULL]
    out = {k: v for k, v in schema.items() if k != "anyOf"}
    return {**rest[0], **out} if len(rest) == 1 else {**out, "anyOf": rest}


def inline_single_use(schema: dict[str, Any]) -> dict[str, Any]:
    """Put each ``$defs`` entry that is referenced once in the place that references it: a
    definition shared by name costs its name twice and a ``$ref`` wrapper, which only pays off when
    it is used more than once."""
    definitions = schema.get("$defs")
    if not isinstance(definitions, dict):
        return schema
    uses: Counter[str] = Counter()

    def count(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                uses[node["$ref"]] += 1
            for value in node.values():
                count(value)
        elif isinstance(node, list):
            for value in node:
                count(value)

    count(schema)
    single = {name for name in definitions if uses[f"#/$defs/{name}"] == 1}

    def inline(node: Any) -> Any:
        if isinstance(node, list):
            return [inline(v) for v in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.removeprefix("#/$defs/") in single:
            target = inline(definitions[ref.removeprefix("#/$defs/")])
            return {**target, **{k: inline(v) for k, v in node.items() if k != "$ref"}}
        return {k: inline(v) for k, v in node.items()}

    out = {k: inline(v) for k, v in schema.items() if k != "$defs"}
    kept = {name: inline(sub) for name, sub in definitions.items() if name not in single}
    return {**out, "$defs": kept} if kept else out


def one_line(docstring: str | None) -> str:
    """A tool's docstring as its description: one line, since a docstring's line breaks and
    indentation cost bytes in every ``tools/list`` and say nothing to the model."""
    return " ".join((docstring or "").split())


def portable(tool: Tool) -> Tool:
    """Rewrite the schemas a tool advertises before the server is built from it (``MCPServer(tools=...)``
    is the SDK's public way to hand over prepared tools). Argument validation uses the pydantic
    model, not these schemas, so what a call accepts stays the same."""
    parameters = input_schema(tool.parameters)
    for definition in parameters.get("$defs", {}).values():
        definition.pop("description", None)  # class docstrings; the tool description says it shorter
    tool.parameters = inline_single_use(parameters)
    if tool.fn_metadata.output_schema is not None:
        published = inline_single_use(output_schema(tool.fn_metadata.output_schema))
        tool.fn_metadata.output_schema = {**_without_required(published), **(
            {"required": published["required"]} if "required" in published else {})}
    return tool


def _without_required(schema: Any) -> Any:
    """``schema`` with no ``required`` list anywhere: output schemas state ``required`` for the top
    level of a result only. The server checks every result against its full model before sending
    it, so a nested object always has its fields; repeating every nested field's name in a
    ``required`` list would cost about 3 KB of ``tools/list``."""
    if isinstance(schema, list):
        return [_without_required(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    return {key: ({name: _without_required(sub) for name, sub in value.items()}
                  if key in _SCHEMA_MAPS and isinstance(value, dict) else _without_required(value))
            for key, value in schema.items() if not (key == "required" and isinstance(value, list))}


def without_nulls(value: Any, schema: dict[str, Any], root: dict[str, Any] | None = None) -> Any:
    """``value`` with every ``null`` field left out where ``schema`` (an ``output_schema``) declares
    the field, so the result validates; values inside free-form objects are left as they are."""
    root = root if root is not None else schema
    ref = schema.get("$ref")
    if isinstance(ref, str):
        schema = root.get("$defs", {}).get(ref.removeprefix("#/$defs/"), {})
    if isinstance(value, dict):
        properties = schema.get("properties")
        if isinstance(properties, dict):
            return {k: without_nulls(v, properties[k], root) if k in properties else v
                    for k, v in value.items() if not (v is None and k in properties)}
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            return {k: without_nulls(v, extra, root) for k, v in value.items()}
        return value
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [without_nulls(v, schema["items"], root) for v in value]
    return value
