"""The engine stays headless: gateway/ never imports Textual; store/ imports neither Textual nor aiohttp."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def imported_modules(package: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        out[str(path.relative_to(ROOT))] = names
    return out


def test_gateway_never_imports_textual_or_tui():
    bad = {p: n & {"textual", "tui"} for p, n in imported_modules("gateway").items() if n & {"textual", "tui"}}
    # the CLI's `tui` command is the one allowed door, imported lazily inside the command
    bad.pop("gateway/cli.py", None)
    bad.pop("gateway/demo.py", None)  # the demo opens the TUI on top of the engine
    assert not bad, bad


def test_store_imports_neither_textual_nor_aiohttp():
    bad = {p: n & {"textual", "aiohttp", "tui", "gateway"} for p, n in imported_modules("store").items()
           if n & {"textual", "aiohttp", "tui", "gateway"}}
    assert not bad, bad


def test_importing_the_engine_loads_no_textual():
    code = ("import sys, gateway.app, gateway.routing.router, gateway.doors.server, gateway.cli; "
            "import store.records; print('textual' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_the_policy_layer_and_the_vendor_adapters_never_import_aiohttp():
    """The router decides and the adapters translate; writing HTTP answers is the doors' job."""
    for package in ("gateway/routing", "gateway/vendors"):
        bad = {p: n & {"aiohttp", "textual", "tui"} for p, n in imported_modules(package).items()
               if n & {"aiohttp", "textual", "tui"}}
        assert not bad, bad
