"""`patchbay` command line: serve, check-config, mock, demo, tui, history and operator commands.

Imports are lazy per command so `patchbay check-config` starts instantly and
the gateway never imports Textual.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

DEFAULT_CONFIG = "patchbay.toml"
DEFAULT_ADMIN_URL = "http://127.0.0.1:4001"


def _load(path: str):
    from gateway.config_load import ConfigError, load_config
    try:
        return load_config(path)
    except ConfigError as e:
        print(e.render(), file=sys.stderr)
        raise SystemExit(2) from None


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    n_targets = len(cfg.targets())
    print(f"{args.config}: OK — {len(cfg.vendors)} vendor(s), {len(cfg.routes)} route(s), {n_targets} target(s)")
    for r in cfg.routes.values():
        print(f"  route {r.name}: " + " -> ".join(t.id for t in r.targets))
    for key, words in cfg.warnings:
        print(f"warning: {args.config}: {key}: {words}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import asyncio

    from gateway.app import ListenError, install_uvloop, serve_forever
    cfg = _load(args.config)
    if args.log_format is None and cfg.server.log_format != "text":
        from gateway.logs import setup_logging
        setup_logging(args.log_level, cfg.server.log_format)
    log = logging.getLogger("patchbay")
    for key, words in cfg.warnings:
        if key != "server.admin_token_env":     # the gateway says that one itself as the admin API stays off
            log.warning("%s: %s: %s", args.config, key, words)
    install_uvloop()
    try:
        asyncio.run(serve_forever(cfg))
    except ListenError as e:
        print(f"patchbay: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_mock(argv: list[str]) -> int:
    from gateway.mock.__main__ import main as mock_main
    return int(mock_main(argv) or 0)


def cmd_history(args: argparse.Namespace) -> int:
    """From the admin API like every operator command; from the database file with -c (gateway down)."""
    if args.config is None:
        from store.cli import history_params, write_history
        from tui.ops import history_remote
        return history_remote(args, history_params(args), write_history)
    cfg = _load(args.config)
    from gateway.control.admin_http import AdminHTTPError, parse_time
    from store.cli import history_main
    try:
        since, until = parse_time(args.since, "since"), parse_time(args.until, "until")
    except AdminHTTPError as e:
        print(f"patchbay history: {e.message}", file=sys.stderr)
        return 1
    return history_main(cfg.store.path, args.limit, args.route, args.target, args.outcome, args.q,
                        fmt=args.format, failover=args.failover, since=since, until=until)


def _limit(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number 1-1000, got {text!r}") from None
    if not 1 <= n <= 1000:
        raise argparse.ArgumentTypeError(f"must be 1-1000, got {n}")
    return n


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo
    return run_demo(args)


def cmd_tui(args: argparse.Namespace) -> int:
    from tui.app import run_tui
    from tui.client import admin_url
    token = os.environ.get("PATCHBAY_ADMIN_TOKEN", "")
    return run_tui(admin_url(args.admin_url), token, args.readonly, args.refresh)


def _control(name: str):
    def run(args: argparse.Namespace) -> int:
        from tui import ops  # the operator commands live beside the panel, on the one admin client
        return getattr(ops, name)(args)
    return run


def _with_config(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="config file (default: patchbay.toml)")


def _with_admin(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--admin-url", default=os.environ.get("PATCHBAY_ADMIN_URL"),
                    help=f"admin API of a running gateway (default {DEFAULT_ADMIN_URL}); "
                         "token from PATCHBAY_ADMIN_TOKEN")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="patchbay", description="LLM failover gateway with a terminal control panel")
    sub = p.add_subparsers(dest="command", required=True)
    _add_gateway_commands(sub)
    _add_history_command(sub)
    _add_operator_commands(sub)
    return p


def _add_gateway_commands(sub: Any) -> None:
    """serve, check-config, mock, demo, tui: commands that run something here."""
    sp = sub.add_parser("serve", help="run the gateway")
    _with_config(sp)
    sp.add_argument("--log-level", default="info")
    sp.add_argument("--log-format", choices=("text", "json"), default=None,
                    help="text (default) or json: one object per line with time, level, logger, message and "
                         "request_id (overrides [server] log_format)")
    sp.set_defaults(func=cmd_serve)

    sp = sub.add_parser("check-config", help="validate a config file and exit non-zero on error")
    _with_config(sp)
    sp.set_defaults(func=cmd_check_config)

    # `patchbay mock ...` hands its arguments to the fake vendors' own parser (see main()).
    sub.add_parser("mock", help="run fake OpenAI, DeepSeek, Anthropic and Gemini vendors with fault injection "
                                "(patchbay mock --help)", add_help=False)

    sp = sub.add_parser("demo", help="fake vendors + gateway + traffic + control panel, no API keys needed")
    sp.add_argument("--no-tui", action="store_true", help="print a live summary instead of opening the TUI")
    sp.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    sp.add_argument("--rps", type=float, default=5.0, help="synthetic requests per second")
    sp.set_defaults(func=cmd_demo)

    sp = sub.add_parser("tui", help="open the control panel on a running gateway")
    sp.add_argument("--admin-url", default=os.environ.get("PATCHBAY_ADMIN_URL"))
    sp.add_argument("--readonly", action="store_true", help="hide every modifying action")
    sp.add_argument("--refresh", type=float, default=1.0, help="seconds between state refreshes")
    sp.set_defaults(func=cmd_tui)


def _add_history_command(sub: Any) -> None:
    """history: the request log, from a running gateway or its database file."""
    sp = sub.add_parser("history", help="recent requests from a running gateway (or, with -c, from its "
                                        "database file while it is down)")
    _with_admin(sp)
    sp.add_argument("-c", "--config", default=None,
                    help="read the request log of this config's database file instead of the admin API")
    sp.add_argument("--limit", type=_limit, default=20, help="rows, 1-1000 (default 20)")
    sp.add_argument("--route")
    sp.add_argument("--target", help="requests that tried this target (any attempt, not only the last)")
    sp.add_argument("--outcome", help="ok | fallback | error | client_error | cut | client_gone")
    sp.add_argument("--failover", action="store_true", help="only requests that failed over")
    sp.add_argument("--since", help="15m, 2h, 1d, 18:30 as ISO time, or epoch seconds")
    sp.add_argument("--until")
    sp.add_argument("--search", "-q", dest="q",
                    help="free text over route, target and every attempt's error, or a request id")
    fmt = sp.add_mutually_exclusive_group()
    fmt.add_argument("--json", dest="format", action="store_const", const="json", help="one JSON array")
    fmt.add_argument("--csv", dest="format", action="store_const", const="csv", help="CSV with a header row")
    sp.set_defaults(func=cmd_history, format="table")


def _add_operator_commands(sub: Any) -> None:
    """status, order, disable, enable, drill: operator commands, through a running gateway's admin API."""
    sp = sub.add_parser("status", help="routes and target health of a running gateway")
    _with_admin(sp)
    sp.add_argument("--json", action="store_true", help="the gateway's /admin/state document as JSON")
    sp.set_defaults(func=_control("status"))

    sp = sub.add_parser("order", help="set a route's fallback order")
    _with_admin(sp)
    sp.add_argument("route")
    sp.add_argument("targets", nargs="+")
    sp.set_defaults(func=_control("order"))

    for verb in ("disable", "enable"):
        sp = sub.add_parser(verb, help=f"{verb} a target (vendor/model) or a whole vendor")
        _with_admin(sp)
        sp.add_argument("what", help="a target id like openai/gpt-4.1, or a vendor name like openai")
        if verb == "disable":
            sp.add_argument("--reason", default="")
        sp.set_defaults(func=_control(verb))

    sp = sub.add_parser("drill", help="run a failover drill on a target and print its report")
    _with_admin(sp)
    sp.add_argument("target")
    sp.add_argument("--fault", required=True, help="error:503 | error:429 | timeout | hang | latency:MS | stream_cut")
    sp.add_argument("--duration", type=float, default=30)
    sp.add_argument("--traffic", type=float, default=0, help="synthetic requests per second during the drill")
    sp.set_defaults(func=_control("drill"))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["mock"]:
        return cmd_mock(argv[1:])
    args = build_parser().parse_args(argv)
    from gateway.logs import setup_logging
    setup_logging(getattr(args, "log_level", "info"), getattr(args, "log_format", None) or "text")
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
