"""Size rules: no module over 500 lines in gateway/ and store/, no function over 80 lines outside tests/.

A module that size holds more than one job and a function that long more than one step; both are
split into named pieces instead (issue 10). The fake vendors in gateway/mock/ are exempt from the
module rule (each is one vendor's whole surface), not from the function rule.
"""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def _sources(*packages: str) -> list[pathlib.Path]:
    return sorted(p for package in packages for p in (ROOT / package).rglob("*.py"))


def test_no_module_in_gateway_or_store_is_over_500_lines():
    exempt = ROOT / "gateway" / "mock"
    offenders = []
    for path in _sources("gateway", "store"):
        if exempt in path.parents:
            continue
        lines = len(path.read_bytes().splitlines())
        if lines > MAX_MODULE_LINES:
            offenders.append(f"{path.relative_to(ROOT)}: {lines} lines")
    assert not offenders, (f"modules over {MAX_MODULE_LINES} lines (split them by job):\n  "
                           + "\n  ".join(offenders))


def test_no_function_outside_tests_is_over_80_lines():
    offenders = []
    for path in _sources("gateway", "store", "tui", "bench"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}(): {length} lines")
    assert not offenders, (f"functions over {MAX_FUNCTION_LINES} lines (split them into named steps):\n  "
                           + "\n  ".join(offenders))
