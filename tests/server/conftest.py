"""Starts `dsinfer serve` on loopback for the tests: DSINFER_CLI is the dsinfer program, DSINFER_TEST_MODEL the
small random-weight checkpoint (scripts/make_small_checkpoint.py --preset v32-tiny). DSINFER_TRAINED_MODEL (or the
repo's models/dsinfer-v32-mini when it exists) is a trained model for the tests that need sensible output."""
import os
import re
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "test-key-123"


def cli_path():
    p = os.environ.get("DSINFER_CLI", str(ROOT / "build" / "tools" / "dsinfer"))
    if not Path(p).exists():
        pytest.skip(f"dsinfer program not built: {p}")
    return p


def model_path():
    p = os.environ.get("DSINFER_TEST_MODEL", str(ROOT / "build" / "models" / "v32-tiny"))
    if not Path(p, "config.json").exists():
        pytest.skip(f"test model missing: {p}")
    return p


def trained_model_path():
    p = os.environ.get("DSINFER_TRAINED_MODEL", str(ROOT / "models" / "dsinfer-v32-mini"))
    return p if Path(p, "config.json").exists() else None


class Server:
    """One `dsinfer serve` process on an ephemeral loopback port."""

    def __init__(self, *args, model=None, api_key=API_KEY, launcher=(), threads=2):
        # launcher: a command that starts the program, e.g. ["mpirun", "-np", "2"] for a distributed server.
        cmd = [*launcher, cli_path(), "serve", "--model", model or model_path(), "--host", "127.0.0.1", "--port", "0",
               "--threads", str(threads), *args]
        if api_key:
            cmd += ["--api-key", api_key]
        self.api_key = api_key
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        self.log = []
        self.port = None
        deadline = time.time() + 60
        while self.port is None:
            line = self.proc.stderr.readline()
            if not line:
                raise RuntimeError("dsinfer serve exited: " + "".join(self.log))
            self.log.append(line)
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
            if time.time() > deadline:
                raise RuntimeError("dsinfer serve did not start")
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        self.base = f"http://127.0.0.1:{self.port}"
        while True:  # until the model is loaded
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except Exception:
                pass
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError("dsinfer serve did not become ready: " + "".join(self.log))
            time.sleep(0.05)

    def _drain(self):
        for line in self.proc.stderr:
            self.log.append(line)

    def client(self, **kw):
        import openai
        kw.setdefault("api_key", self.api_key or "unused")
        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 120)
        return openai.OpenAI(base_url=self.base + "/v1", **kw)

    def metrics(self):
        with urllib.request.urlopen(self.base + "/metrics", timeout=10) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


@pytest.fixture(scope="session")
def server():
    s = Server("--max-sessions", "16", "--max-queue", "64", "--ctx", "2048", "--max-body-bytes", "262144",
               "--served-model-name", "dsinfer-test")
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="session")
def client(server):
    return server.client()
