"""`patchbay demo` as an operator meets it: ports kept across a restart, piped output, no leftovers."""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path

from gateway.demo import _port_free
from tests.serve_proc import serve_command


def test_a_port_whose_old_connections_linger_counts_as_free():
    """A restarted demo keeps 4000/4001: connections of the last run in TIME_WAIT do not move it."""
    with socket.socket() as srv:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]
        cli = socket.create_connection(("127.0.0.1", port))
        conn, _ = srv.accept()
        conn.close()            # the server side closes first: its end of the pair lingers in TIME_WAIT
        cli.close()
    assert _port_free(port)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        assert not _port_free(busy.getsockname()[1])   # a port really in use is still seen as taken


def test_piped_demo_says_why_there_is_no_panel_and_leaves_no_folder():
    res = subprocess.run([*serve_command(), "demo", "--duration", "2.5", "--rps", "2"], capture_output=True,
                         text=True, timeout=90, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr
    assert "standard output is not a terminal (piped or redirected), so the control panel is off" in res.stdout
    m = re.search(r"request log: (\S+)/patchbay-demo\.db", res.stdout)
    assert m and not Path(m.group(1)).exists()


def test_a_demo_stopped_by_a_signal_still_removes_its_folder():
    """A closed terminal (SIGHUP) or `kill` (SIGTERM) must not leave /tmp/patchbay-demo-* behind."""
    import signal
    import time

    proc = subprocess.Popen([*serve_command(), "demo", "--no-tui", "--rps", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        folder = None
        deadline = time.monotonic() + 60
        while folder is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            m = re.search(r"request log: (\S+)/patchbay-demo\.db", line)
            folder = Path(m.group(1)) if m else None
        assert folder is not None and folder.exists()
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()
    assert not folder.exists()
