"""The sandbox running for real: uvicorn on an ephemeral loopback port, in a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import httpx
import pytest
import uvicorn

from gpconnect.sandbox.app import create_app
from gpconnect.sandbox.data import load_or_generate
from gpconnect.sandbox.provider import Sandbox
from gpconnect.sandbox.records import SandboxRecord


@dataclass
class RunningSandbox:
    base_url: str
    sandbox: Sandbox

    def url(self, path: str) -> str:
        return self.base_url + path


class _ThreadedServer:
    def __init__(self, sandbox: Sandbox, sock: socket.socket, **ssl_options: object) -> None:
        config = uvicorn.Config(
            create_app(sandbox), log_level="warning", lifespan="off", **ssl_options
        )  # type: ignore[arg-type]
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )

    def __enter__(self) -> _ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the sandbox did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture(scope="session")
def sandbox_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SandboxRecord]:
    data_dir = tmp_path_factory.mktemp("sandbox-data")
    return data_dir, load_or_generate(data_dir, today=date.today(), include_stress=False)


@pytest.fixture(scope="session")
def running_sandbox(sandbox_data: tuple[Path, SandboxRecord]) -> Iterator[RunningSandbox]:
    data_dir, record = sandbox_data
    sock = bound_socket()
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sandbox = Sandbox(base_url=base_url, data_dir=data_dir, record=record)
    with _ThreadedServer(sandbox, sock):
        yield RunningSandbox(base_url, sandbox)


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client
