"""pytest hooks of the network guard, loaded by tests/conftest.py (or `-p network_guard_plugin`).

The guard is installed at configuration, before the test modules are imported (importing libraries is where
unasked-for requests happen), and, through `sitecustomize.py` in this folder, in every Python subprocess a test starts.
Any attempt to reach a host other than this machine fails the running test (or the collection of the module being
imported), even when a library caught the error.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from network_guard import LOG_ENV, NetworkGuard

GUARD_DIR = Path(__file__).parent
GUARD = NetworkGuard()


def pytest_configure(config):
    log_fd, GUARD.log_path = tempfile.mkstemp(prefix="lavin-network-guard-", suffix=".jsonl")
    os.close(log_fd)
    GUARD.install()
    os.environ[LOG_ENV] = GUARD.log_path
    # A Python subprocess imports `sitecustomize` from the first folder on its path that has one: this one.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(GUARD_DIR), os.environ.get("PYTHONPATH")]))


def pytest_unconfigure(config):
    GUARD.uninstall()
    Path(GUARD.log_path).unlink(missing_ok=True)


def _fail_on_attempts(report) -> None:
    attempts = GUARD.take()
    if not attempts:
        return
    message = "Reached for the network (only this machine is allowed):\n" + "\n".join(attempts)
    if report.failed:
        report.sections.append(("network guard", message))
    else:
        report.outcome, report.longrepr = "failed", message


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """Importing a test module (and the libraries it imports) is checked too: the module fails to collect."""
    outcome = yield
    _fail_on_attempts(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Each phase of a test (setup, call, teardown) fails if it, or a subprocess it started, reached out."""
    outcome = yield
    _fail_on_attempts(outcome.get_result())


@pytest.fixture
def network_guard() -> NetworkGuard:
    """The suite's guard, for tests that make blocked attempts on purpose and `take()` them."""
    return GUARD
