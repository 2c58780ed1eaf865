"""The HTTP judge's bounds that test_judge.py and test_inputs.py leave out: TLS certificates are verified, a server
trickling its headers still hits the deadline, and proxies from the environment are not used (the key goes to the
judge's URL only)."""

import json
import shutil
import socket
import ssl
import subprocess
import threading
import time

import pytest

from transformers_lavin.evaluation import HTTPJudge, JudgeError

REPLY = json.dumps({"choices": [{"message": {"content": "7 7"}}]}).encode()


class RawServer:
    """A one-thread TCP server on 127.0.0.1 that runs `serve(connection)` for each connection it accepts."""

    def __init__(self, serve, tls_context: ssl.SSLContext | None = None) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests: list[bytes] = []
        self.serve, self.tls_context = serve, tls_context
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            try:
                if self.tls_context is not None:
                    connection = self.tls_context.wrap_socket(connection, server_side=True)
                self.requests.append(connection.recv(65536))
                self.serve(connection)
            except OSError:
                pass
            finally:
                connection.close()

    def close(self) -> None:
        self.listener.close()


def answer(connection: socket.socket) -> None:
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(REPLY)}\r\n\r\n"
    connection.sendall(head.encode() + REPLY)


def test_a_server_trickling_its_headers_hits_the_deadline():
    def trickle_headers(connection):
        connection.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        for _ in range(200):
            connection.sendall(b"a")
            time.sleep(0.05)

    server = RawServer(trickle_headers)
    try:
        start = time.monotonic()
        with pytest.raises(JudgeError, match="no complete reply within 0.5 s"):
            HTTPJudge(f"http://127.0.0.1:{server.port}/v1", "j", timeout=0.5, retries=0)("s", "u")
        assert time.monotonic() - start < 3
    finally:
        server.close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_tls_certificates_are_verified(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = RawServer(answer, tls_context=context)
    try:
        with pytest.raises(JudgeError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            HTTPJudge(f"https://127.0.0.1:{server.port}/v1", "j", api_key="secret", timeout=5, retries=0)("s", "u")
        assert not any(b"secret" in request for request in server.requests)  # the handshake failed first
    finally:
        server.close()


def test_proxies_from_the_environment_are_not_used(monkeypatch):
    judge_server, proxy = RawServer(answer), RawServer(answer)
    try:
        for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        judge = HTTPJudge(f"http://127.0.0.1:{judge_server.port}/v1", "j", api_key="secret", timeout=5, retries=0)
        assert judge("s", "u") == "7 7"
        assert proxy.requests == [] and b"Bearer secret" in judge_server.requests[0]
    finally:
        judge_server.close()
        proxy.close()
