"""The suite's network guard (tests/guard/) refuses every host but this machine, in the test process and in its
subprocesses, and fails a test whose attempt a library swallowed."""

from __future__ import annotations

import os
import socket
import socketserver
import subprocess
import sys
import threading

import pytest
from network_guard import NetworkBlockedError, is_local_host

ELSEWHERE = "192.0.2.1"  # TEST-NET-1 (RFC 5737): never a real host


@pytest.mark.parametrize(
    "host, local",
    [
        ("127.0.0.1", True),
        ("127.3.4.5", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", True),
        ("localhost", True),
        (None, True),
        (socket.gethostname(), True),
        (ELSEWHERE, False),
        ("10.0.0.1", False),
        ("2001:db8::1", False),
        ("huggingface.co", False),
        ("localhost.example.com", False),
    ],
)
def test_only_this_machine_counts_as_local(host, local):
    assert is_local_host(host) is local


def test_connections_and_lookups_elsewhere_are_refused_and_recorded(network_guard):
    with pytest.raises(NetworkBlockedError):
        socket.getaddrinfo("huggingface.co", 443)
    with pytest.raises(NetworkBlockedError):
        socket.create_connection((ELSEWHERE, 80), timeout=1)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        with pytest.raises(NetworkBlockedError):
            sock.connect((ELSEWHERE, 443))
        with pytest.raises(NetworkBlockedError):
            sock.connect_ex((ELSEWHERE, 8443))
    attempts = network_guard.take()
    assert [attempt.split(" (process")[0] for attempt in attempts] == [
        "name lookup of 'huggingface.co'",
        f"name lookup of '{ELSEWHERE}'",
        f"connection to {ELSEWHERE}:443",
        f"connection to {ELSEWHERE}:8443",
    ]
    assert all(__file__ in attempt for attempt in attempts)  # each says where it came from


class _Echo(socketserver.StreamRequestHandler):
    def handle(self):
        self.wfile.write(self.rfile.readline())


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_loopback_servers_stay_reachable(host, network_guard):
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            with socket.create_connection((host, server.server_address[1]), timeout=5) as sock:
                sock.sendall(b"ping\n")
                assert sock.makefile().readline() == "ping\n"
        finally:
            server.shutdown()
    assert network_guard.take() == []


def test_subprocesses_are_guarded_and_report_to_the_test(network_guard):
    code = (
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(({ELSEWHERE!r}, 80), timeout=1)\n"
        "except OSError as error:\n"
        "    print(type(error).__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "NetworkBlockedError"
    attempts = network_guard.take()
    assert len(attempts) == 1 and attempts[0].startswith(f"name lookup of '{ELSEWHERE}'")


def test_attempts_a_library_swallowed_fail_the_test_or_the_module_import(tmp_path):
    (tmp_path / "test_swallowed.py").write_text(
        "import socket\n"
        "def test_library_catches_everything():\n"
        "    try:\n"
        f"        socket.create_connection(({ELSEWHERE!r}, 80), timeout=1)\n"
        "    except Exception:\n"
        "        pass  # as bitsandbytes does with its Hub kernel\n"
        "def test_stays_local():\n"
        "    socket.getaddrinfo('localhost', 80)\n"
    )
    (tmp_path / "test_import_time.py").write_text(
        "import socket\n"
        "try:  # at import, as bitsandbytes asks the Hub for its kernel\n"
        "    socket.getaddrinfo('huggingface.co', 443)\n"
        "except OSError:\n"
        "    pass\n"
        "def test_never_runs():\n"
        "    pass\n"
    )
    plugin = ["-p", "network_guard_plugin", "--continue-on-collection-errors"]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *plugin, str(tmp_path)],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"},  # the outer run's options are not for it
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 failed, 1 passed, 1 error" in result.stdout
    assert "FAILED test_swallowed.py::test_library_catches_everything" in result.stdout
    assert f"name lookup of '{ELSEWHERE}'" in result.stdout
    assert "ERROR test_import_time.py" in result.stdout and "name lookup of 'huggingface.co'" in result.stdout
