"""The suite's network guard: a connection to, or a name lookup of, any host but this machine fails the test.

`tests/conftest.py` installs it in the pytest process and puts this folder first on `PYTHONPATH`, so that
`sitecustomize.py` beside this file installs it in every Python subprocess a test starts as well. A blocked attempt
raises `NetworkBlockedError` where it happens and is recorded, so that the test fails even when a library catches the
error; subprocesses append their attempts to the file named by `LAVIN_NETWORK_GUARD_LOG`.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import socket
import traceback

LOG_ENV = "LAVIN_NETWORK_GUARD_LOG"
_INET_FAMILIES = (socket.AF_INET, socket.AF_INET6)


class NetworkBlockedError(OSError):
    """Raised instead of reaching the network: an `OSError`, as from a network that cannot be reached."""


@functools.cache
def _own_addresses() -> frozenset[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses of this machine's own interfaces (a connection to them never leaves it)."""
    try:
        import psutil  # installed with accelerate and PEFT
    except ImportError:
        return frozenset()
    addresses = set()
    for interface in psutil.net_if_addrs().values():
        for entry in interface:
            if entry.family in _INET_FAMILIES:
                try:
                    addresses.add(ipaddress.ip_address(entry.address.split("%", 1)[0]))
                except ValueError:
                    continue
    return frozenset(addresses)


def is_local_host(host: str | bytes | None) -> bool:
    """Whether `host` is this machine: loopback, unspecified and own interface addresses, `localhost`, its name."""
    if isinstance(host, bytes):
        host = host.decode()
    if host in (None, "", "localhost", socket.gethostname()) or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])  # IPv6 literals may carry a zone: fe80::1%eth0
    except ValueError:
        return False  # a name: looking it up asks a DNS server
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_unspecified or address in _own_addresses()


class NetworkGuard:
    """
    Patches `socket.socket.connect`, `connect_ex` and `socket.getaddrinfo` to refuse non-local hosts. `log_path` is
    the file subprocesses report to: a guard with `in_subprocess=True` writes its attempts there, the test process's
    guard reads them in `take`.
    """

    def __init__(self, log_path: str | None = None, in_subprocess: bool = False):
        self.log_path = log_path
        self.in_subprocess = in_subprocess
        self.attempts: list[str] = []
        self._originals: tuple | None = None

    def install(self) -> None:
        if self._originals is not None:
            return
        self._originals = connect, connect_ex, getaddrinfo = (
            socket.socket.connect,
            socket.socket.connect_ex,
            socket.getaddrinfo,
        )

        def guarded_connect(sock, address):
            self._check_address(sock, address)
            return connect(sock, address)

        def guarded_connect_ex(sock, address):
            self._check_address(sock, address)
            return connect_ex(sock, address)

        def guarded_getaddrinfo(host, *args, **kwargs):
            if not is_local_host(host):
                self._refuse(f"name lookup of {host!r}")
            return getaddrinfo(host, *args, **kwargs)

        socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = (
            guarded_connect,
            guarded_connect_ex,
            guarded_getaddrinfo,
        )

    def uninstall(self) -> None:
        if self._originals is not None:
            socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = self._originals
            self._originals = None

    def take(self) -> list[str]:
        """The attempts recorded since the last call, this process's and its subprocesses', and forget them."""
        attempts, self.attempts = self.attempts, []
        if self.log_path and os.path.exists(self.log_path):
            with open(self.log_path, "r+", encoding="utf-8") as log:
                attempts += [json.loads(line) for line in log if line.strip()]
                log.truncate(0)
        return attempts

    def _check_address(self, sock: socket.socket, address) -> None:
        if sock.family in _INET_FAMILIES and not is_local_host(address[0]):
            self._refuse(f"connection to {address[0]}:{address[1]}")

    def _refuse(self, what: str) -> None:
        frames = [frame for frame in traceback.extract_stack() if frame.filename != __file__]
        if len(frames) > 30:  # where it started (a test, an import) and how it reached the socket
            frames = [*frames[:10], ("...", 0, "...", None), *frames[-20:]]
        where = "".join(traceback.format_list(frames))
        attempt = f"{what} (process {os.getpid()}) from:\n{where}"
        if self.in_subprocess:
            with open(self.log_path, "a", encoding="utf-8") as log:
                log.write(json.dumps(attempt) + "\n")
        else:
            self.attempts.append(attempt)
        raise NetworkBlockedError(f"the test suite allows no network access but this machine: {what}")
