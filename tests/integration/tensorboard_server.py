"""TensorBoard as a person opens it: the real server on 127.0.0.1 over a run's logs, read through its HTTP API (the
same routes the browser's dashboards call)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TensorBoard:
    """Read a running TensorBoard's data routes (``/data/plugin/<plugin>/...``)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def raw(self, route: str, **query: str) -> bytes:
        url = f"{self.url}/data/{route}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        with urllib.request.urlopen(url, timeout=60) as reply:
            return reply.read()

    def json(self, route: str, **query: str):
        return json.loads(self.raw(route, **query))

    def tags(self, plugin: str) -> dict[str, dict]:
        """``{run: {tag: ...}}`` of a plugin (``scalars``, ``images``, ``audio``, ``text``, ``hparams``...)."""
        return self.json(f"plugin/{plugin}/tags")

    def image(self, run: str, tag: str) -> bytes:
        """The last image of ``tag`` as the IMAGES dashboard fetches it (PNG bytes)."""
        entries = self.json("plugin/images/images", run=run, tag=tag, sample="0")
        return self.raw(f"plugin/images/individualImage?{entries[-1]['query']}")


@contextmanager
def tensorboard(logdir: Path, timeout: float = 300) -> Iterator[TensorBoard]:
    """Start ``tensorboard --logdir`` on a free port of 127.0.0.1; yield once every run's scalars are loaded; stop
    it afterwards."""
    port = free_port()
    cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
           "--port", str(port), "--load_fast", "false", "--reload_interval", "1"]  # fmt: skip
    log = logdir / "tensorboard-server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=os.environ)
    board = TensorBoard(f"http://127.0.0.1:{port}")
    runs = {str(p.parent.relative_to(logdir)) for p in logdir.rglob("events.out.tfevents.*")}
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert proc.poll() is None, f"tensorboard exited ({proc.returncode}):\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"tensorboard not ready after {timeout} s:\n{log.read_text()[-3000:]}"
            try:
                if runs <= set(board.tags("scalars")):
                    break
            except OSError:
                pass
            time.sleep(1)
        yield board
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
