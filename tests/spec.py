"""Validate gateway output against OpenAI's published OpenAPI spec (../shared/specs), never a copy of it."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

SPEC = Path(__file__).resolve().parents[2] / "shared" / "specs" / "openai-openapi.yaml"


def _nullable_to_type(node: Any) -> Any:
    """OpenAPI 3.0's `nullable: true` (still used in places) -> JSON Schema's type union with null."""
    if isinstance(node, dict):
        out = {k: _nullable_to_type(v) for k, v in node.items()}
        if out.pop("nullable", False):
            t = out.get("type")
            if isinstance(t, str):
                out["type"] = [t, "null"]
            elif isinstance(t, list) and "null" not in t:
                out["type"] = [*t, "null"]
            elif "type" not in out:
                out = {"anyOf": [out, {"type": "null"}]}
            if isinstance(out.get("enum"), list) and None not in out["enum"]:
                out["enum"] = [*out["enum"], None]
        return out
    if isinstance(node, list):
        return [_nullable_to_type(v) for v in node]
    return node


@lru_cache(maxsize=1)
def _registry():
    import yaml
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    doc = _nullable_to_type(yaml.load(SPEC.read_text(), Loader=loader))
    uri = "urn:openai-openapi"
    return uri, Registry().with_resource(uri, Resource(doc, specification=DRAFT202012))


def validator(schema_name: str):
    """A jsonschema validator for components/schemas/<schema_name>; skips when the spec is absent."""
    if not SPEC.exists():
        pytest.skip(f"OpenAI spec not found at {SPEC} (it lives in ../shared/specs beside the repo)")
    from jsonschema import Draft202012Validator

    uri, registry = _registry()
    return Draft202012Validator({"$ref": f"{uri}#/components/schemas/{schema_name}"}, registry=registry)


def assert_valid(schema_name: str, instance: Any) -> None:
    errors = sorted(validator(schema_name).iter_errors(instance), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])
