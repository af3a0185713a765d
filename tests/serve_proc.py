"""`patchbay serve -c FILE` as a real child process, for tests that need signals and whole-process faults.

The gateway binds port 0 (data and admin); the ports are read from its own
"listening on" log line, so tests never guess free ports. Its stderr goes to a
file that the test can scan afterwards (log lines, tracebacks, secrets).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import tomli_w

ROOT = Path(__file__).resolve().parents[1]
_LISTENING = re.compile(r"patchbay listening on (http://[\d.]+:\d+) \(admin (http://[\d.]+:\d+|disabled)\)")


def serve_command() -> list[str]:
    """The installed `patchbay` script beside this interpreter, else the same CLI as a module."""
    script = Path(sys.executable).with_name("patchbay")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "gateway.cli"]


def write_config(path: Path, raw: dict[str, Any]) -> Path:
    path.write_text(tomli_w.dumps(raw))
    return path


class ServeProcess:
    """One `patchbay serve` child; `start()` waits until it listens, `stop()` sends SIGTERM."""

    def __init__(self, config_path: Path, env: dict[str, str] | None = None, log_level: str = "info",
                 args: list[str] | None = None):
        self.config_path = config_path
        self.args = list(args or [])
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PATCHBAY_")}
        self.env.update(env or {})
        self.env["PYTHONUNBUFFERED"] = "1"
        self.log_level = log_level
        self.stderr_path = config_path.with_suffix(".stderr.log")
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.admin_url: str | None = None

    def start(self, timeout: float = 30.0) -> ServeProcess:
        self.stderr_path.write_bytes(b"")
        err = open(self.stderr_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [*serve_command(), "serve", "-c", str(self.config_path), "--log-level", self.log_level, *self.args],
                cwd=str(self.config_path.parent), env=self.env, stdin=subprocess.DEVNULL,
                stdout=err, stderr=err)
        finally:
            err.close()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            m = _LISTENING.search(self.stderr())
            if m:
                self.url = m.group(1)
                self.admin_url = None if m.group(2) == "disabled" else m.group(2)
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"patchbay serve exited with {self.proc.returncode}:\n{self.stderr()}")
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"patchbay serve did not start within {timeout}s:\n{self.stderr()}")

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait (the clean stop path); SIGKILL if it does not exit in time."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
