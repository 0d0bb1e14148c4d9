"""Processes of the e2e layer: the worker under test (and test agents) in their own process
group, with logs in a file, signals to the pid, and a teardown that kills the whole group.

    procs = ProcessGroup(tmp_path)
    worker = procs.start_worker({"LIVEKIT_URL": standin.url, ...})   # python -m agent start
    await worker.wait_for_log("registered worker", timeout=30)
    worker.signal(signal.SIGTERM)              # one SIGTERM: the worker drains
    assert await worker.wait_exit(timeout=60) == 0
    procs.stop_all()                           # teardown: every group killed, newest first

Rules (DESIGN.md, "Tests" layer 3): scenario signals go to the worker's pid only (a second
SIGTERM makes the library exit at once); teardown kills the group (forkserver and idle job
processes stay otherwise); the worker is stopped before the stand-in (a vanished /agent makes a
worker retry for about two minutes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import psutil

from tests.e2e.netns import ENV_FLAG

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
# variables passed through from our own environment to every process we start
PASSTHROUGH_ENV: Final = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ", ENV_FLAG)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def base_env() -> dict[str, str]:
    """A small, explicit environment: nothing of ours (keys, proxies) leaks into the worker."""
    env = {k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@dataclass(eq=False)
class ManagedProcess:
    """A started process (leader of its own process group) and its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    # pid -> create_time of every descendant seen, so a reused pid is never killed
    descendants: dict[int, float] = field(default_factory=dict)
    killed_at_teardown: bool = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        """Send ``sig`` to this process only (not its group)."""
        self._remember_descendants()
        os.kill(self.pid, sig)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    async def wait_for_log(self, needle: str, *, timeout: float, start: int = 0) -> int:
        """Wait until ``needle`` appears in the log after character offset ``start``; return
        the offset just after it. Raises TimeoutError (with the log's tail) or RuntimeError if
        the process exits first."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_text()
            index = text.find(needle, start)
            if index >= 0:
                return index + len(needle)
            if not self.alive():
                raise RuntimeError(
                    f"{self.name} exited ({self.returncode}) before logging {needle!r}:\n"
                    + self.log_tail()
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name} did not log {needle!r} within {timeout}s:\n" + self.log_tail()
                )
            await asyncio.sleep(0.1)

    async def wait_exit(self, *, timeout: float) -> int:
        """Wait (without blocking the event loop) for the process to exit; its return code."""
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} still running after {timeout}s")
            self._remember_descendants()
            await asyncio.sleep(0.1)
        code = self.popen.returncode
        assert code is not None
        return code

    def _remember_descendants(self) -> None:
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    self.descendants[child.pid] = child.create_time()

    def kill_group(self, *, grace: float = 0.0) -> None:
        """Teardown: SIGTERM the group and wait up to ``grace`` s (if grace > 0), then SIGKILL
        the group and every descendant seen (some may have left the group)."""
        self._remember_descendants()
        self.killed_at_teardown = self.alive()
        if grace > 0 and self.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(grace)
        self._remember_descendants()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        for pid, created in self.descendants.items():
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                if proc.create_time() == created:
                    proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)


def start_process(
    name: str,
    argv: list[str],
    env: dict[str, str],
    log_dir: Path,
    *,
    cwd: Path = REPO_ROOT,
) -> ManagedProcess:
    """Start ``argv`` in its own session/process group with ``base_env() | env``; stdout and
    stderr go to ``log_dir/<name>.log``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with log_path.open("ab") as log_file:
        popen = subprocess.Popen(
            argv,
            cwd=cwd,
            env={**base_env(), **env},
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return ManagedProcess(name=name, popen=popen, log_path=log_path)


def worker_env(
    *,
    livekit_url: str,
    api_key: str,
    api_secret: str,
    agent_name: str,
    data_dir: Path,
    **extra: str,
) -> dict[str, str]:
    """The e2e environment of `python -m agent start` (extra: OPENAI_BASE_URL, BACKEND_URL, ...)."""
    return {
        "LIVEKIT_URL": livekit_url,
        "LIVEKIT_API_KEY": api_key,
        "LIVEKIT_API_SECRET": api_secret,
        "AGENT_NAME": agent_name,
        "AGENT_DATA_DIR": str(data_dir),
        "PORT": str(free_port()),
        "LOAD_THRESHOLD": "1000",  # aiortc's media work loads 2 cores (DESIGN.md, Tests)
        "INITIALIZE_PROCESS_TIMEOUT": "30",
        "OPENAI_API_KEY": "sk-e2e-not-a-key",
        **extra,
    }


class ProcessGroup:
    """Every process a test starts; ``stop_all()`` kills them newest first."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.processes: list[ManagedProcess] = []

    def start(
        self, name: str, argv: list[str], env: dict[str, str], *, cwd: Path = REPO_ROOT
    ) -> ManagedProcess:
        proc = start_process(name, argv, env, self.log_dir, cwd=cwd)
        self.processes.append(proc)
        return proc

    def start_worker(
        self,
        env: dict[str, str],
        *,
        name: str = "worker",
        source: Path = REPO_ROOT,
        python: str = sys.executable,
    ) -> ManagedProcess:
        """The project's worker: ``python -m agent start`` with ``env`` (see ``worker_env``), its
        code from ``source`` (a checkout of another commit, for a bench's baseline arm), run by
        ``python`` (another environment's interpreter, for a bench's worker)."""
        env = {**env, "PYTHONPATH": str(source)} if source != REPO_ROOT else env
        return self.start(name, [python, "-m", "agent", "start"], env, cwd=source)

    def start_module(
        self, module: str, env: dict[str, str], *args: str, name: str | None = None
    ) -> ManagedProcess:
        """``python -m module args...`` (e.g. ``tests.e2e.tone_agent start``)."""
        return self.start(
            name or module.rsplit(".", 1)[-1], [sys.executable, "-m", module, *args], env
        )

    def stop_all(self, *, grace: float = 0.0) -> None:
        for proc in reversed(self.processes):
            proc.kill_group(grace=grace)


def run_bench_smoke(
    script: Path, out: Path, *extra: str, timeout: float
) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    """A bench script with `--smoke` in its own process, from the repository root, writing its
    JSON to `out`: it must exit 0 and say where the figures went. Returns the figures and the
    run (its output, for failure messages)."""
    completed = subprocess.run(
        [sys.executable, str(script), "--smoke", "--json", str(out), *extra],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-4000:]
    assert str(out) in completed.stdout  # it says where the figures went
    result: dict[str, Any] = json.loads(out.read_text())
    return result, completed
