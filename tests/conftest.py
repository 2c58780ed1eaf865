"""Suite-wide rules. No test reaches the network: only this machine is allowed (the fake Hub, the chat app and the
judge server listen on loopback); the guard and its hooks live in tests/guard/."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "guard"))

import network_guard_plugin  # noqa: E402
from network_guard_plugin import (  # noqa: E402, F401  (hooks and fixtures pytest finds here)
    network_guard,
    pytest_make_collect_report,
    pytest_runtest_makereport,
    pytest_unconfigure,
)


def pytest_configure(config):
    network_guard_plugin.pytest_configure(config)
    # The package before any test module, as users import it: it keeps Hub kernels off before PEFT imports
    # bitsandbytes, which a module importing PEFT first would let ask the Hub for a kernel (docs/security.md).
    import transformers_lavin  # noqa: F401
