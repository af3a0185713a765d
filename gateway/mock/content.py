"""Deterministic answers shared by every dialect of the fake vendors.

Tests compare what a client receives with what the mock would say, so the
answer is a pure function of the request: a greeting naming dialect and model,
then a few words echoing the last user message. One word is one token; usage
counts the prompt's words and the tokens emitted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ECHO_WORDS = 8
FILLER = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit")


@dataclass(slots=True)
class Reply:
    """What the mock answers, before a dialect renders it."""

    dialect: str
    model: str
    prompt_tokens: int
    tokens: list[str]                    # text pieces; "".join(tokens) is the content
    finish: str = "stop"                 # stop | length | tool | stop_sequence | refusal
    stop_sequence: str | None = None
    tool_name: str | None = None
    tool_args: str | None = None         # JSON text of the arguments
    tool_fragments: list[str] | None = None
    reasoning: list[str] | None = None   # DeepSeek reasoning_content / Anthropic thinking pieces

    @property
    def text(self) -> str:
        return "".join(self.tokens)

    @property
    def completion_tokens(self) -> int:
        n = len(self.tool_fragments) if self.tool_fragments is not None else len(self.tokens)
        return n + (len(self.reasoning) if self.reasoning else 0)

    @property
    def stream_units(self) -> int:
        """How many token events a stream carries (what cut:N / stall:N count)."""
        return self.completion_tokens


def words(text: str) -> int:
    return len(text.split())


def answer_words(dialect: str, model: str, last_user: str, forced: int | None) -> list[str]:
    ws = f"Hello from {dialect}/{model}.".split()
    echo = last_user.split()[:ECHO_WORDS]
    if echo:
        ws += ["You", "said:", *echo]
    if forced is not None:
        if forced <= len(ws):
            ws = ws[:max(forced, 0)]
        else:
            ws += [FILLER[i % len(FILLER)] for i in range(forced - len(ws))]
    return ws


def to_tokens(ws: list[str]) -> list[str]:
    return [w if i == 0 else " " + w for i, w in enumerate(ws)]


def build_reply(dialect: str, model: str, *, last_user: str, prompt_tokens: int,
                max_tokens: int | None = None, stop: list[str] | None = None,
                forced_tokens: int | None = None, reasoning: bool = False,
                tool: tuple[str, dict[str, Any]] | None = None) -> Reply:
    reply = Reply(dialect, model, prompt_tokens, [])
    if reasoning:
        reply.reasoning = to_tokens(f"The user wrote {words(last_user)} words; answer briefly.".split())
    if tool is not None:
        import orjson
        reply.tool_name = tool[0]
        reply.tool_args = orjson.dumps(tool[1]).decode()
        reply.tool_fragments = split_args(reply.tool_args)
        reply.finish = "tool"
        return reply
    tokens = to_tokens(answer_words(dialect, model, last_user, forced_tokens))
    if stop:
        text = "".join(tokens)
        cut_at = None
        for s in stop:
            if s and (i := text.find(s)) >= 0 and (cut_at is None or i < cut_at[0]):
                cut_at = (i, s)
        if cut_at is not None:
            kept, pos = [], 0
            for t in tokens:
                if pos + len(t) > cut_at[0]:
                    break
                kept.append(t)
                pos += len(t)
            tokens = kept
            reply.finish = "stop_sequence"
            reply.stop_sequence = cut_at[1]
    if max_tokens is not None and max_tokens < len(tokens):
        tokens = tokens[:max(max_tokens, 0)]
        reply.finish = "length"
        reply.stop_sequence = None
    reply.tokens = tokens
    return reply


def split_args(text: str, size: int = 8) -> list[str]:
    """Argument JSON in fragments, the way vendors stream tool calls."""
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def example_value(schema: Any) -> Any:
    """A simple value that satisfies a (simple) JSON schema."""
    if not isinstance(schema, dict):
        return "mock"
    if schema.get("enum"):
        return schema["enum"][0]
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), "string")
    t = str(t).lower() if t else ("object" if "properties" in schema else "string")
    if t == "integer":
        return 1
    if t == "number":
        return 1.5
    if t == "boolean":
        return True
    if t == "array":
        return [example_value(schema.get("items"))] if schema.get("items") else []
    if t == "object":
        return example_args(schema)
    if t == "null":
        return None
    return "mock"


def example_args(schema: Any) -> dict[str, Any]:
    """Arguments with every required property of a tool's parameter schema."""
    if not isinstance(schema, dict):
        return {}
    props = schema.get("properties") or {}
    required = schema.get("required") or []
    return {name: example_value(props.get(name)) for name in required if isinstance(name, str)}
