"""Shared pieces for adapters that translate OpenAI chat requests to another wire format.

Clients send whatever JSON they like; the router has only checked that
`messages` is a list. Every helper here either returns a well-typed value or
raises `VendorError(BAD_REQUEST)` with a message naming the offending field,
so a malformed request becomes an OpenAI-style 400 and never a 500.
"""

from __future__ import annotations

import mimetypes
import random
from collections.abc import Iterator
from typing import Any, NoReturn

import orjson

from gateway.vendors.base import ErrorClass, VendorError


def bad(message: str) -> NoReturn:
    """Refuse a request the vendor could never accept: the client's fault, returned as a 400."""
    raise VendorError(ErrorClass.BAD_REQUEST, message, 400, None, "invalid_request_error")


def dumps(obj: Any) -> bytes:
    """orjson, but a value it cannot encode (e.g. an integer over 64 bits) is the client's 400."""
    try:
        return orjson.dumps(obj)
    except (orjson.JSONEncodeError, TypeError) as exc:
        bad(f"request contains a value that cannot be sent upstream: {exc}")


def header(headers: Any, name: str) -> str | None:
    """A response header by lower-case name from aiohttp's CIMultiDict or a plain dict."""
    if not headers:
        return None
    try:
        value = headers.get(name)
        if value is None and isinstance(headers, dict):
            for k, v in headers.items():
                if isinstance(k, str) and k.lower() == name:
                    return v
        return value
    except AttributeError:
        return None


def new_call_id() -> str:
    """An OpenAI-looking tool call id for vendors that do not give one (ids need not be secret)."""
    return f"call_{random.getrandbits(96):024x}"


# --- request field readers ---------------------------------------------------

def opt_number(body: dict, key: str) -> float | int | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        bad(f"'{key}' must be a number")
    if v != v or v in (float("inf"), float("-inf")):
        bad(f"'{key}' must be a finite number")
    return v


def opt_int(body: dict, key: str, minimum: int = 1) -> int | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        bad(f"'{key}' must be an integer")
    if v < minimum:
        bad(f"'{key}' must be at least {minimum}")
    return v


def max_tokens(body: dict) -> int | None:
    """`max_completion_tokens` (the current OpenAI name) wins over the legacy `max_tokens`."""
    v = opt_int(body, "max_completion_tokens")
    return v if v is not None else opt_int(body, "max_tokens")


def stop_list(body: dict) -> list[str] | None:
    stop = body.get("stop")
    if stop is None:
        return None
    if isinstance(stop, str):
        return [stop] if stop else None
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return [s for s in stop if s] or None
    bad("'stop' must be a string or an array of strings")


def text_of(content: Any, where: str) -> str:
    """Plain text of a message whose parts may only be text (system, developer, tool)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, str):
                out.append(part)
                continue
            if not isinstance(part, dict):
                bad(f"{where}: content parts must be objects")
            ptype = part.get("type")
            if ptype in ("text", "input_text", "output_text", "refusal"):
                text = part.get("text") if ptype != "refusal" else part.get("refusal")
                if not isinstance(text, str):
                    bad(f"{where}: a {ptype} part needs a string '{'refusal' if ptype == 'refusal' else 'text'}'")
                out.append(text)
            else:
                bad(f"{where}: only text parts are allowed here, got {ptype!r}")
        return "".join(out)
    bad(f"{where}: 'content' must be a string or an array of parts")


def parse_image_url(part: dict, where: str) -> tuple[str, str, str]:
    """An OpenAI image_url part -> ('base64', media_type, data) or ('url', media_type, url)."""
    iu = part.get("image_url")
    if isinstance(iu, str):
        url = iu
    elif isinstance(iu, dict) and isinstance(iu.get("url"), str):
        url = iu["url"]
    else:
        bad(f"{where}: an image_url part needs image_url.url (a string)")
    return parse_media_url(url, where, "image/jpeg")


def parse_media_url(url: str, where: str, default_mime: str) -> tuple[str, str, str]:
    if url.startswith("data:"):
        head, sep, data = url.partition(",")
        if not sep:
            bad(f"{where}: malformed data URL (no comma)")
        meta = head[5:].split(";")
        if "base64" not in meta[1:]:
            bad(f"{where}: only base64 data URLs are supported")
        mime = meta[0] or default_mime
        if not data:
            bad(f"{where}: empty data URL")
        return "base64", mime, data
    if url.startswith(("http://", "https://", "gs://")):
        path = url.split("?", 1)[0].split("#", 1)[0]
        mime = mimetypes.guess_type(path)[0] or default_mime
        return "url", mime, url
    bad(f"{where}: image URL must be a data: URL or an http(s) URL")


def function_tools(body: dict) -> list[dict] | None:
    """Validated OpenAI function tools -> [{name, description, parameters}] (None when absent)."""
    tools = body.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list):
        bad("'tools' must be an array")
    out = []
    for i, t in enumerate(tools):
        if not isinstance(t, dict):
            bad(f"tools[{i}] must be an object")
        if t.get("type", "function") != "function":
            bad(f"tools[{i}]: only function tools can be sent to this vendor, got type {t.get('type')!r}")
        fn = t.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            bad(f"tools[{i}].function.name is required (a string)")
        desc = fn.get("description")
        if desc is not None and not isinstance(desc, str):
            bad(f"tools[{i}].function.description must be a string")
        params = fn.get("parameters")
        if params is not None and not isinstance(params, dict):
            bad(f"tools[{i}].function.parameters must be a JSON Schema object")
        out.append({"name": fn["name"], "description": desc, "parameters": params})
    return out or None


def tool_choice(body: dict) -> tuple[str, str | None] | None:
    """OpenAI tool_choice -> ('auto'|'none'|'required'|'function', name)."""
    tc = body.get("tool_choice")
    if tc is None:
        return None
    if isinstance(tc, str):
        if tc not in ("auto", "none", "required"):
            bad("'tool_choice' must be 'auto', 'none', 'required' or a named function")
        return tc, None
    if isinstance(tc, dict):
        fn = tc.get("function")
        if tc.get("type", "function") == "function" and isinstance(fn, dict) and isinstance(fn.get("name"), str):
            return "function", fn["name"]
        if tc.get("type") == "allowed_tools":
            bad("'tool_choice' allowed_tools is not supported for this vendor")
    bad("'tool_choice' must be 'auto', 'none', 'required' or {\"type\": \"function\", \"function\": {\"name\": ...}}")


def parse_arguments(args: Any, where: str) -> dict:
    """An assistant tool call's JSON-string arguments as the object vendors want."""
    if args is None or args == "":
        return {}
    if isinstance(args, dict):
        return args
    if not isinstance(args, str):
        bad(f"{where}: function.arguments must be a JSON string")
    try:
        value = orjson.loads(args)
    except orjson.JSONDecodeError:
        bad(f"{where}: function.arguments is not valid JSON")
    if not isinstance(value, dict):
        bad(f"{where}: function.arguments must encode a JSON object")
    return value


def tool_calls_of(msg: dict, where: str) -> list[tuple[str, str, dict]]:
    """(id, name, arguments) for each tool call of an assistant message."""
    calls = msg.get("tool_calls")
    if calls is None:
        return []
    if not isinstance(calls, list):
        bad(f"{where}.tool_calls must be an array")
    out = []
    for j, call in enumerate(calls):
        w = f"{where}.tool_calls[{j}]"
        if not isinstance(call, dict):
            bad(f"{w} must be an object")
        fn = call.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            bad(f"{w}.function.name is required (a string)")
        cid = call.get("id")
        if not isinstance(cid, str) or not cid:
            bad(f"{w}.id is required (a string)")
        out.append((cid, fn["name"], parse_arguments(fn.get("arguments"), w)))
    return out


def json_schema_format(body: dict) -> tuple[str, dict | None] | None:
    """response_format -> ('json', schema or None), or None for text/absent."""
    rf = body.get("response_format")
    if rf is None:
        return None
    if not isinstance(rf, dict):
        bad("'response_format' must be an object")
    rtype = rf.get("type")
    if rtype == "text":
        return None
    if rtype == "json_object":
        return "json", None
    if rtype == "json_schema":
        js = rf.get("json_schema")
        if not isinstance(js, dict):
            bad("response_format.json_schema must be an object")
        schema = js.get("schema")
        if schema is not None and not isinstance(schema, dict):
            bad("response_format.json_schema.schema must be an object")
        return "json", schema
    bad("response_format.type must be 'text', 'json_object' or 'json_schema'")


def usage_dict(prompt: int, completion: int, cached: int = 0, reasoning: int | None = None) -> dict[str, Any]:
    u: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                         "total_tokens": prompt + completion,
                         "prompt_tokens_details": {"cached_tokens": cached}}
    if reasoning:
        u["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return u


def as_int(v: Any) -> int:
    """A token count from a vendor: a sane non-negative int, else 0 (never breaks JSON encoding later)."""
    return v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2 ** 53 else 0


def args_json(value: Any) -> str:
    """Tool call arguments as the JSON string OpenAI clients expect, whatever the vendor sent."""
    try:
        return orjson.dumps(value if value is not None else {}).decode()
    except (orjson.JSONEncodeError, TypeError):
        import json
        return json.dumps(value, default=str)


def merge_turn(out: list[dict], role: str, items: list[dict], key: str) -> None:
    """Append a turn, merged into the previous one when the role repeats (both vendors want
    alternating roles, OpenAI histories need not alternate)."""
    if not items:
        return
    if out and out[-1]["role"] == role:
        out[-1][key].extend(items)
    else:
        out.append({"role": role, key: items})


def content_parts(content: list, where: str) -> Iterator[tuple[str, Any, dict]]:
    """(where, type, part) for each part of a user message's content array, each checked to be an object."""
    if not isinstance(content, list):
        bad(f"{where}.content must be a string or an array of parts")
    for k, part in enumerate(content):
        w = f"{where}.content[{k}]"
        if not isinstance(part, dict):
            bad(f"{w} must be an object")
        yield w, part.get("type"), part


def part_text(part: dict, where: str) -> str:
    text = part.get("text")
    if not isinstance(text, str):
        bad(f"{where}: a text part needs a string 'text'")
    return text


def inline_file(part: dict, where: str, vendor: str) -> tuple[str, str]:
    """(mime, base64 data) of a `file` part; only inline file_data (a data URL or bare base64 PDF) travels."""
    f = part.get("file")
    fd = f.get("file_data") if isinstance(f, dict) else None
    if not isinstance(fd, str):
        bad(f"{where}: only inline file_data (a data URL) files can be sent to {vendor}")
    _, mime, data = parse_media_url(fd if fd.startswith("data:") else f"data:application/pdf;base64,{fd}",
                                    where, "application/pdf")
    return mime, data
