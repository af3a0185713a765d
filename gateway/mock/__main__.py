"""``python -m gateway.mock --port N``: the fake vendors in their own process (benchmarks, demos)."""

from __future__ import annotations

import argparse
import os
import sys

from gateway.mock.server import run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="patchbay mock",
                                description="Fake OpenAI / DeepSeek / Anthropic / Gemini vendors with fault injection.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8800, help="port (default 8800; 0 = any free port)")
    p.add_argument("--token-interval-ms", type=float, default=0.0,
                   help="delay between stream tokens (default 0)")
    p.add_argument("--tokens", type=int, default=None, help="force every answer to N tokens")
    p.add_argument("--keys-env", default=None, metavar="VAR",
                   help="require one of the comma-separated keys in this environment variable")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keys = None
    if args.keys_env:
        raw = os.environ.get(args.keys_env, "")
        keys = [k.strip() for k in raw.split(",") if k.strip()]
        if not keys:
            print(f"patchbay mock: environment variable {args.keys_env} holds no keys", file=sys.stderr)
            return 2
    run(args.host, args.port, keys=keys, token_interval_ms=args.token_interval_ms, tokens=args.tokens,
        print_fn=lambda line: print(line, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
