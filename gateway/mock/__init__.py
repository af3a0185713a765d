"""Fake LLM vendors speaking the real wire formats, with faults switchable at runtime.

One aiohttp server serves every dialect under a path prefix, so one port is enough:

=========  ==========================================  =========================================
dialect    base_url to configure                       endpoints
=========  ==========================================  =========================================
openai     ``http://HOST:PORT/openai/v1``              ``POST /chat/completions``, ``GET /models[/{id}]``
deepseek   ``http://HOST:PORT/deepseek/v1``            same, plus ``reasoning_content`` for models
                                                       named ``*reasoner*`` or ``thinking.type=enabled``;
                                                       402 "Insufficient Balance" for billing
anthropic  ``http://HOST:PORT/anthropic``              ``POST /v1/messages``, ``GET /v1/models[/{id}]``
gemini     ``http://HOST:PORT/gemini``                 ``POST /v1beta/models/{m}:generateContent``,
                                                       ``:streamGenerateContent?alt=sse``,
                                                       ``GET /v1beta/models[/{m}]``
=========  ==========================================  =========================================

Answers are deterministic: ``Hello from <dialect>/<model>. You said: <first 8 words of
the last user message>``, one word per token; usage counts prompt words and emitted
tokens. With tools (and tool choice not none) the answer is a call to the named or
first tool, arguments built from the schema's required properties, streamed as
argument fragments in each dialect's format (Gemini sends the whole functionCall part).
A request whose last message is a tool result is answered in text.

Control API (JSON; never counted in stats)
-----------------------------------------
``POST /_mock/faults``  body: one fault object or a list of them::

    {"model": "gpt-4.1" | "*",            # default "*"
     "dialect": "openai" | "deepseek" | "anthropic" | "gemini" | "*",   # default "*"
     "fault": "error",                    # or shorthand "error:503", "cut:3", "latency:200", "flap:5"
     "status": 503, "retry_after": 1, "times": 1, ...}

  optional keys: ``status`` (error), ``retry_after`` s (Retry-After header; Gemini:
  RetryInfo.retryDelay), ``times`` K (apply to the next K matching requests, then back
  to ok), ``ms`` (latency, slow_first_token), ``n`` (tokens before cut / stall /
  malformed / error_event), ``seconds`` (flap), ``message``, ``type`` / ``error_type``
  (vendor error type), ``latency_ms`` (extra delay before any fault), ``interval_ms``
  (delay between stream tokens), ``tokens`` (force N answer tokens), ``scope``
  (``all`` default | ``chat`` | ``models``: which endpoints the fault hits; list
  endpoints only ever see ``model: "*"`` faults). One fault per (dialect, model); a new
  one replaces it; ``"fault": "ok"`` removes it. Lookup order: (dialect, model),
  (dialect, *), (*, model), (*, *). Answer: ``{"faults": [...]}``.
``GET /_mock/faults`` lists; ``DELETE /_mock/faults[?model=M&dialect=D]`` clears.
``GET /_mock/stats`` -> ``{"total": N, "chat": {dialect: {model: n}}, "paths":
{"POST /openai/v1/chat/completions": n, "GET /openai/v1/models": n, ...},
"faults": {name: times applied}}``; ``POST /_mock/reset_stats`` zeroes them.
``GET|POST /_mock/config`` ``{"token_interval_ms": 50, "tokens": null}`` global options.

Faults (same switches in every dialect)
---------------------------------------
ok                   normal answers
latency:ms           fixed delay, then a normal answer
error:status         that status with the dialect's error body (+ Retry-After if retry_after)
context_length       400 context_length_exceeded / "prompt is too long" / INVALID_ARGUMENT token count
content_policy       OpenAI 400 content_policy_violation; Anthropic 200 stop_reason "refusal";
                     Gemini 200 finishReason SAFETY (with ``status``: an HTTP error everywhere)
auth                 401 invalid key (Gemini: 400 INVALID_ARGUMENT, ErrorInfo API_KEY_INVALID)
billing              OpenAI 429 insufficient_quota; DeepSeek 402 Insufficient Balance;
                     Anthropic 402 billing_error; Gemini 400 FAILED_PRECONDITION
reset                read the request, then abort the connection before any header
hang                 never answer until the client goes away
slow_first_token:ms  stream: headers and framing now, first token after ms (non-stream: latency)
cut:N                stream: abort the connection after N tokens, no terminal event
                     (non-stream: headers and half the body, then abort)
stall:N              stream: after N tokens stay silent with the connection open
malformed[:N]        stream: one unparsable event before token N (default: the middle)
                     (non-stream: a truncated JSON body with status 200)
no_done              stream: no ``[DONE]`` / ``message_stop`` / final finishReason chunk
error_event[:N]      stream: an in-band error after N tokens (Anthropic ``event: error``
                     overloaded_error, OpenAI/Gemini an ``{"error": ...}`` chunk), then EOF
flap:seconds         503 for that many seconds from now, then ok (and the fault is gone)

Python API (``gateway.mock.server``): ``await start_mock(host, port=0, keys=None,
token_interval_ms=0, tokens=None, models=None) -> MockServer`` (``.port``, ``.url``,
``.base_url(dialect)``, ``.set_fault(fault, model="*", **params)``, ``.clear_faults()``,
``.configure(...)``, ``.stats``, ``.reset_stats()``, ``await .stop()``);
``MockVendorThread(...)`` the same from sync code (own loop in a thread, context
manager); ``run(host, port, ...)`` blocking (``patchbay mock``, ``python -m gateway.mock``).
"""

from gateway.mock.faults import Fault, FaultError, parse_fault
from gateway.mock.server import MockServer, MockState, MockVendorThread, run, start_mock

__all__ = ["Fault", "FaultError", "MockServer", "MockState", "MockVendorThread", "parse_fault", "run",
           "start_mock"]
