"""Anthropic's streamed events (message_start .. content_block_* .. message_stop) as OpenAI deltas.

The stream decoder is the adapter's hot path and its own state machine (one
OpenAI tool-call index per Anthropic tool_use block, usage merged across
events), so it lives apart from the request translation in
gateway/vendors/anthropic.py; the stop-reason and usage mappings that both
the stream and a whole answer use are here too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.vendors.base import StreamDecoder, StreamDelta
from gateway.vendors.translate import as_int, usage_dict

if TYPE_CHECKING:   # the adapter builds decoders; at run time this module never imports it
    from gateway.vendors.anthropic import AnthropicAdapter

FINISH = {"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "max_tokens": "length",
          "model_context_window_exceeded": "length", "tool_use": "tool_calls", "refusal": "content_filter"}


def finish_reason(stop: Any) -> str:
    """Anthropic's stop_reason as an OpenAI finish_reason."""
    return FINISH.get(stop, "stop") if isinstance(stop, str) else "stop"


def map_usage(u: Any) -> dict[str, Any] | None:
    """Anthropic counts cached input apart from input_tokens; OpenAI's prompt_tokens includes it."""
    if not isinstance(u, dict):
        return None
    cached = as_int(u.get("cache_read_input_tokens"))
    prompt = as_int(u.get("input_tokens")) + cached + as_int(u.get("cache_creation_input_tokens"))
    return usage_dict(prompt, as_int(u.get("output_tokens")), cached)


class AnthropicStreamDecoder(StreamDecoder):
    """message_start .. content_block_* .. message_delta .. message_stop -> OpenAI deltas."""

    def __init__(self, adapter: AnthropicAdapter):
        super().__init__()
        self._adapter = adapter
        self._role_sent = False
        self._tools: dict[int, int] = {}  # Anthropic block index -> OpenAI tool_calls index
        self._next_tool = 0
        self._usage: dict[str, Any] = {}

    def _role(self, out: list[StreamDelta]) -> None:
        if not self._role_sent:
            self._role_sent = True
            out.append(StreamDelta({"role": "assistant"}))

    def feed(self, event: str | None, data: str) -> list[StreamDelta]:
        obj = self.load(data)
        if obj is None:
            return []
        etype = obj.get("type") or event
        if etype == "content_block_delta":   # nearly every event of a stream: tested first
            return self._block_delta(obj)
        if etype == "ping" or etype == "content_block_stop":
            return []
        if etype == "content_block_start":
            return self._block_start(obj)
        if etype == "message_start":
            return self._message_start(obj)
        if etype == "message_delta":
            return self._message_delta(obj)
        if etype == "message_stop":
            self.done = True
            return []
        if etype == "error":
            raise self._adapter._error_from(obj.get("error"), None)
        return []  # unknown event type from a newer API version

    def _block_delta(self, obj: dict) -> list[StreamDelta]:
        """Text, tool-call arguments or thinking, appended to the current content block."""
        delta = obj.get("delta")
        if not isinstance(delta, dict):
            self.malformed += 1
            return []
        dtype = delta.get("type")
        out: list[StreamDelta] = []
        if not self._role_sent:
            self._role(out)
        if dtype == "text_delta":
            text = delta.get("text")
            if isinstance(text, str):
                out.append(StreamDelta({"content": text}))
                return out
        elif dtype == "input_json_delta":
            bi = obj.get("index")
            idx = self._tools.get(bi) if isinstance(bi, int) else None
            part = delta.get("partial_json")
            if idx is not None and isinstance(part, str):
                if part:
                    out.append(StreamDelta({"tool_calls": [{"index": idx, "function": {"arguments": part}}]}))
                return out
        elif dtype == "thinking_delta":
            text = delta.get("thinking")
            if isinstance(text, str):
                out.append(StreamDelta({"reasoning_content": text}))
                return out
        elif dtype in ("signature_delta", "citations_delta"):
            return out
        else:
            return out  # a delta type from a newer API version: ignore, do not fail
        self.malformed += 1
        return out

    def _block_start(self, obj: dict) -> list[StreamDelta]:
        """A new content block: a tool call gets its OpenAI index, text or thinking may start inline."""
        block = obj.get("content_block")
        if not isinstance(block, dict):
            self.malformed += 1
            return []
        out: list[StreamDelta] = []
        self._role(out)
        btype = block.get("type")
        if btype == "tool_use":
            idx = self._next_tool
            self._next_tool += 1
            bi = obj.get("index")
            if isinstance(bi, int):
                self._tools[bi] = idx
            out.append(StreamDelta({"tool_calls": [{
                "index": idx, "id": str(block.get("id") or ""), "type": "function",
                "function": {"name": str(block.get("name") or ""), "arguments": ""}}]}))
        elif btype == "text":
            text = block.get("text")
            if isinstance(text, str) and text:
                out.append(StreamDelta({"content": text}))
        elif btype == "thinking":
            text = block.get("thinking")
            if isinstance(text, str) and text:
                out.append(StreamDelta({"reasoning_content": text}))
        return out

    def _message_start(self, obj: dict) -> list[StreamDelta]:
        msg = obj.get("message")
        if isinstance(msg, dict) and isinstance(msg.get("usage"), dict):
            self._merge_usage(msg["usage"])
        out: list[StreamDelta] = []
        self._role(out)
        return out

    def _message_delta(self, obj: dict) -> list[StreamDelta]:
        """Usage so far, and the stop reason: the finishing delta."""
        delta = obj.get("delta")
        if isinstance(obj.get("usage"), dict):
            self._merge_usage(obj["usage"])
        stop = delta.get("stop_reason") if isinstance(delta, dict) else None
        if stop is None:
            return []
        out: list[StreamDelta] = []
        self._role(out)
        out.append(StreamDelta({}, finish_reason(stop), map_usage(self._usage)))
        return out

    def _merge_usage(self, u: dict) -> None:
        for k, v in u.items():
            if v is not None:
                self._usage[k] = v
