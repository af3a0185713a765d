"""JSON Schema -> Gemini `Schema` (the OpenAPI 3.0 subset Gemini accepts).

Tool parameters and `response_format` json_schema arrive as JSON Schema; Gemini
takes its own `Schema` object: local `$ref`s inlined, `["x", "null"]` types
turned into `nullable`, unsupported keywords dropped. The conversion is its own
module because it is a self-contained recursive translation, independent of
the rest of the Gemini adapter.
"""

from __future__ import annotations

from typing import Any

SCHEMA_SCALARS = ("format", "title", "description", "nullable", "maxItems", "minItems", "minProperties",
                  "maxProperties", "minLength", "maxLength", "pattern", "example", "default", "minimum",
                  "maximum", "propertyOrdering")
SCHEMA_TYPES = {"string": "STRING", "number": "NUMBER", "integer": "INTEGER", "boolean": "BOOLEAN",
                "array": "ARRAY", "object": "OBJECT", "null": "NULL"}
SCHEMA_FORMATS = {"STRING": {"enum", "date-time"}, "INTEGER": {"int32", "int64"}, "NUMBER": {"float", "double"}}
MAX_DEPTH = 24   # deeper (or cyclic through $ref) schemas convert to {} past this


def to_gemini_schema(schema: Any, defs: dict | None = None, depth: int = 0) -> dict:
    """JSON Schema -> Gemini `Schema` (OpenAPI 3.0 subset); unconvertible pieces are dropped."""
    if not isinstance(schema, dict) or depth > MAX_DEPTH:
        return {}
    if defs is None:
        defs = _local_defs(schema)
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return _inline_ref(schema, ref, defs, depth)
    out: dict[str, Any] = {}
    _add_type(out, schema.get("type"))
    _add_scalars(out, schema)
    _add_enum(out, schema)
    _add_object(out, schema, defs, depth)
    items = schema.get("items")
    if isinstance(items, dict):
        out["items"] = to_gemini_schema(items, defs, depth + 1)
        out.setdefault("type", "ARRAY")
    for key in ("anyOf", "oneOf"):
        alts = schema.get(key)
        if isinstance(alts, list):
            _add_alternatives(out, alts, defs, depth)
    all_of = schema.get("allOf")
    if isinstance(all_of, list):
        _merge_all_of(out, all_of, defs, depth)
    return out


def _local_defs(schema: dict) -> dict:
    """The root schema's `$defs` / `definitions`, which local `$ref`s point into."""
    defs: dict = {}
    for key in ("$defs", "definitions"):
        d = schema.get(key)
        if isinstance(d, dict):
            defs.update(d)
    return defs


def _inline_ref(schema: dict, ref: str, defs: dict, depth: int) -> dict:
    """A `$ref` schema: the referenced definition, overlaid with the ref's own keys; {} if not local."""
    name = ref.rsplit("/", 1)[-1]
    target = defs.get(name) if ref.startswith(("#/$defs/", "#/definitions/")) else None
    merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}} if isinstance(target, dict) else {}
    return to_gemini_schema(merged, defs, depth + 1) if merged else {}


def _add_type(out: dict[str, Any], t: Any) -> None:
    """`type`, where a list becomes one type plus `nullable`, or an `anyOf` of types."""
    if isinstance(t, list):
        kinds = [x for x in t if isinstance(x, str) and x != "null"]
        if "null" in t:
            out["nullable"] = True
        if len(kinds) == 1:
            t = kinds[0]
        elif kinds:
            out["anyOf"] = [{"type": SCHEMA_TYPES[k]} for k in kinds if k in SCHEMA_TYPES]
            t = None
        else:
            t = None
    if isinstance(t, str) and t in SCHEMA_TYPES:
        out["type"] = SCHEMA_TYPES[t]


def _add_scalars(out: dict[str, Any], schema: dict) -> None:
    """Keywords copied as they are; a `format` Gemini does not know for the type is dropped."""
    for key in SCHEMA_SCALARS:
        if key in schema:
            v = schema[key]
            if key == "format" and v not in SCHEMA_FORMATS.get(out.get("type", ""), ()):
                continue
            if key == "propertyOrdering" and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
                continue
            out[key] = v


def _add_enum(out: dict[str, Any], schema: dict) -> None:
    """`enum` (or `const`) of strings: Gemini's enums are strings only."""
    enum = schema.get("enum")
    if "const" in schema and enum is None:
        enum = [schema["const"]]
    if isinstance(enum, list) and enum and all(isinstance(x, str) for x in enum):
        out["enum"] = enum
        out.setdefault("type", "STRING")


def _add_object(out: dict[str, Any], schema: dict, defs: dict, depth: int) -> None:
    """`properties`, converted, and the `required` names among them."""
    props = schema.get("properties")
    if isinstance(props, dict):
        out["properties"] = {str(k): to_gemini_schema(v, defs, depth + 1) for k, v in props.items()}
        out.setdefault("type", "OBJECT")
    req = schema.get("required")
    if isinstance(req, list) and isinstance(props, dict):
        req = [r for r in req if isinstance(r, str) and r in props]
        if req:
            out["required"] = req


def _add_alternatives(out: dict[str, Any], alts: list, defs: dict, depth: int) -> None:
    """`anyOf` / `oneOf`: a null alternative becomes `nullable`; a single one left is merged in."""
    conv = []
    for a in alts:
        if isinstance(a, dict) and a.get("type") == "null":
            out["nullable"] = True
            continue
        ca = to_gemini_schema(a, defs, depth + 1)
        if ca:
            conv.append(ca)
    if len(conv) == 1 and "type" not in out:
        out.update(conv[0])
    elif conv:
        out["anyOf"] = conv


def _merge_all_of(out: dict[str, Any], all_of: list, defs: dict, depth: int) -> None:
    """`allOf`: properties and required lists are unioned; other keys fill in what is not set."""
    for a in all_of:
        ca = to_gemini_schema(a, defs, depth + 1)
        for k, v in ca.items():
            if k == "properties" and isinstance(out.get("properties"), dict):
                out["properties"] = {**out["properties"], **v}
            elif k == "required" and isinstance(out.get("required"), list):
                out["required"] = out["required"] + [r for r in v if r not in out["required"]]
            else:
                out.setdefault(k, v)
