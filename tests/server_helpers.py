"""A real facestream server (uvicorn in a background thread) for tests that need HTTP + WebRTC.

Usage:
    with running_server(Settings(data_dir=tmp_path)) as server:
        httpx.get(server.url + "/healthz")
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import uvicorn
from fastapi import FastAPI

from stream.app import create_app
from stream.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningServer:
    url: str
    app: FastAPI
    server: uvicorn.Server


@contextmanager
def running_server(settings: Settings, start_timeout: float = 60.0) -> Iterator[RunningServer]:
    """Serve create_app(settings) on 127.0.0.1:<free port> until the block ends."""
    port = free_port()
    settings = settings.model_copy(update={"host": "127.0.0.1", "port": port})
    app = create_app(settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="facestream-test-server", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    httpx.get(url + "/healthz", timeout=10).raise_for_status()
    try:
        yield RunningServer(url=url, app=app, server=server)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
