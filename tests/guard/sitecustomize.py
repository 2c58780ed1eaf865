"""Installs the suite's network guard in Python subprocesses of the tests (tests/conftest.py puts this folder first on
PYTHONPATH and names the log file)."""

import os

if os.environ.get("LAVIN_NETWORK_GUARD_LOG"):
    from network_guard import LOG_ENV, NetworkGuard

    NetworkGuard(os.environ[LOG_ENV], in_subprocess=True).install()
