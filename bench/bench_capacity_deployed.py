"""Capacity as deployed: the real worker (`python -m agent start`, one job process per call) with
Opus/WebRTC media through the e2e LiveKit stand-in, N concurrent callers speaking a real WAV.

Rule: prints figures and writes JSON; never asserts. It runs inside a network namespace of its
own (WebRTC media skips loopback; tests/e2e/netns.py): started outside one, it re-executes
itself through `unshare --net` (root, `unshare` and `ip` needed; otherwise it exits with the
reason and writes nothing).

The stack is the e2e layer's (tests/e2e/README.md): the stand-in (in this process), the OpenAI
stub and the backend stub (processes of their own, `zero` timing profile: providers cost nothing
here) and the worker with `NUM_IDLE_PROCESSES=1` and `LOAD_THRESHOLD=1000` as the e2e tests
start it. For each level N (default 1, 2, 4): N callers (real `livekit` rtc SDK, in this process)
join N rooms, N jobs are dispatched, every greeting is heard; then for `--seconds` each caller
speaks `tests/audio/hello_48k.wav` (real speech), waits for the agent's reply and a short gap,
again and again, the callers' starts spread over one turn. Over exactly that window psutil's
CPU times (user + system) are read for:

- the worker: its main process + the N job processes serving the calls + the inference process
  (the end-of-turn model, one per worker, shared by the calls; agent/end_of_turn.py): what a
  deployment pays per call (`cpu_s_per_call_s` = their CPU-seconds / (window * N),
  `calls_per_core` = its inverse); the forkserver and the prewarmed idle process are listed
  apart;
- the test harness: this process (stand-in SFU + callers: their Opus encode/decode and aiortc)
  and the two stubs; not part of the worker's cost;
- the whole machine (psutil.cpu_times), so that what other work on the host took is visible.

Mid-window (at half of it) each job process's PSS (psutil memory_full_info().pss; USS and RSS
too) is sampled while its call is live. Job processes are found by the worker's own JSON log
(records that carry a `job_id` and a `pid` other than the main process's).

With `--baseline REF` a second worker runs the code of that commit (exported with `git archive`,
the same settings and venv), and each level is measured on both workers in turn, so the two
arms share the run's conditions: `arms` in the JSON, side by side in the table. `--repeat K`
measures each level K times per arm, the arms interleaved (A B A B ...): one build's windows
spread by up to ~40 % on this shared machine, following the machine's spell, so each arm's
`summary.by_level` gives the median, the range and the quietest window, and `paired` the
second arm's cost over the first's window by window (windows of one round ran back to back).
`--pin all` (or one arm's name) gives that arm's worker the first CPU to itself and the harness
(with the other arm's idle worker) the others during its windows: deployed, the worker shares
no cores with the SFU; here the stand-in and the callers run beside it and share its caches.
`--worker-python PATH` runs the workers on another environment's interpreter (an optimized
build like the image's; `--baseline-python` the baseline arm only), and `--sfu livekit` has the
stand-in forward each Opus packet unchanged and negotiate DTX as LiveKit's SFU does (the default,
`transcode`, decodes and re-encodes every track). Each window also records the job threads'
wake-ups per second beside their CPU.

Recording (issue 24): `--record` dispatches every call with `record: true` in its metadata (the
worker records it with the library's RecorderIO into AGENT_DATA_DIR/recording-spool and uploads
it after the call); `--record-arms` runs two workers of this checkout side by side instead, arm
`off` (calls not recorded) and arm `on` (recorded), to give what recording costs. Per level and
arm: the recordings the backend stub took for that level's calls (their size, and their length
read from the Ogg file: MiB per minute of call) and the encode thread's CPU
(`recorder_io_encode_thread`: a Python thread, so its OS name is the interpreter's; it is told
apart by `py-spy dump`, from the `profile` dependency group, when installed).

    uv run python bench/bench_capacity_deployed.py [--levels 1,2,4] [--seconds 20]
                                                   [--baseline REF | --record-arms] [--record]
                                                   [--repeat K] [--pin all|baseline|shipped]
                                                   [--worker-python PATH] [--baseline-python PATH]
                                                   [--sfu livekit|transcode]
                                                   [--json PATH] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av
import httpx
import psutil

from agent.config import Settings
from bench._common import RESULTS_DIR, env_overrides, machine_info, quiet_logging, write_result
from bench._e2e import run_in_test_netns, stop_stack, stopped
from tests.e2e.caller import Caller
from tests.e2e.harness import REPO_ROOT, ManagedProcess, ProcessGroup, free_port, worker_env
from tests.e2e.standin import StandIn, participant_token
from tests.e2e.stubs import BackendStubProcess, start_backend_stub, start_openai_stub

AGENT_NAME: Final = "roleplay-capacity"
SERVICE_KEY: Final = "bench-internal-service-key-0123456789"
HEARD: Final = "I have had a really hard week and I need to talk to someone."
WAV: Final = Path(__file__).resolve().parents[1] / "tests" / "audio" / "hello_48k.wav"
TTS_MAX_SECONDS: Final = 1.5  # the stub's spoken reply (a tone) lasts at most this
GAP_AFTER_REPLY: Final = 1.0  # after the reply (at most TTS_MAX_SECONDS) the caller pauses
TURN_PERIOD: Final = 4.7 + 0.6 + TTS_MAX_SECONDS + GAP_AFTER_REPLY  # roughly, to spread starts
GOAL_CALLS_PER_CORE: Final = 10.0
GOAL_PSS_MB: Final = 150.0
MB: Final = 1024 * 1024
ENCODE_THREAD: Final = "recorder_io_encode_thread"  # the RecorderIO's (issue 24)
# Python threads told apart from the interpreter's other threads by their Python name
NAMED_PYTHON_THREADS: Final = (ENCODE_THREAD,)
RECORDINGS_WAIT_S: Final = 30.0  # for the level's uploads once its calls ended


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU-seconds of one process (not its children), None if it is gone."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return float(times.user + times.system)


def thread_name(pid: int, tid: int, named: dict[int, str] | None = None) -> str | None:
    """A thread's name (/proc/PID/task/TID/comm: the Python thread shows the interpreter's name,
    native threads name themselves); `named` (native thread id -> Python name, from
    `python_thread_names`) names those Python threads apart. None if it is gone."""
    if named and tid in named:
        return named[tid]
    try:
        name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
    except OSError:
        return None
    # numbered pools (e.g. "tokio-runtime-w", "ort-worker-3") are grouped by prefix
    return name.rstrip("0123456789-_ ") or name


def thread_cpu(pid: int, named: dict[int, str] | None = None) -> dict[str, float]:
    """CPU-seconds of one process per thread name, summed over same names."""
    by_name: dict[str, float] = {}
    with contextlib.suppress(psutil.Error):
        for thread in psutil.Process(pid).threads():
            if (name := thread_name(pid, thread.id, named)) is not None:
                by_name[name] = by_name.get(name, 0.0) + thread.user_time + thread.system_time
    return by_name


def thread_wakeups(pid: int, named: dict[int, str] | None = None) -> dict[str, int]:
    """Voluntary context switches of one process per thread name, summed over same names: each
    is the thread blocking and later waking, so per second they count wake-ups (a thread on a
    10 ms tick makes 100). The media path's threads are wake-up bound (docs/performance.md)."""
    by_name: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir(f"/proc/{pid}/task"):
            if (name := thread_name(pid, int(entry.name), named)) is None:
                continue
            try:
                status = Path(entry.path, "status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    by_name[name] = by_name.get(name, 0) + int(line.split()[1])
    return by_name


def py_spy_path() -> str | None:
    """py-spy (the `profile` dependency group), beside this interpreter or on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


async def python_thread_names(pid: int) -> dict[int, str] | None:
    """Native thread id -> Python name of the threads in NAMED_PYTHON_THREADS (Python 3.11 does
    not give its threads OS names), from `py-spy dump --nonblocking` (the process is not paused);
    None where py-spy is missing or failed."""
    spy = py_spy_path()
    if spy is None:
        return None
    try:
        proc = await asyncio.create_subprocess_exec(
            spy,
            "dump",
            "--json",
            "--nonblocking",
            "--pid",
            str(pid),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return None
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=15)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return None
    try:
        threads = json.loads(out)
    except json.JSONDecodeError:
        return None
    if not isinstance(threads, list):
        return None
    return {
        int(t["os_thread_id"]): str(t["thread_name"])
        for t in threads
        if isinstance(t, dict)
        and t.get("thread_name") in NAMED_PYTHON_THREADS
        and isinstance(t.get("os_thread_id"), int)
    }


def ogg_seconds(body: bytes) -> float | None:
    """The audio's length in an Ogg file: the end of its last packet (PyAV demux only)."""
    try:
        with av.open(io.BytesIO(body), mode="r") as container:
            stream = container.streams.audio[0]
            end = 0
            for packet in container.demux(stream):
                if packet.pts is not None and packet.duration is not None:
                    end = max(end, packet.pts + packet.duration)
            return float(end * stream.time_base) if stream.time_base and end else None
    except (av.FFmpegError, IndexError, ValueError):
        return None


RecordingKey = tuple[str, int, int]  # session id, attempt, part


async def held_recordings(backend: BackendStubProcess) -> dict[RecordingKey, int]:
    """Every recording the backend stub holds: (session, attempt, part) -> size."""
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{backend.control_url}/recordings")
        response.raise_for_status()
        held: dict[str, list[dict[str, Any]]] = response.json()
    return {
        (sid, int(r["attemptNumber"]), int(r["part"])): int(r["size"])
        for sid, parts in held.items()
        for r in parts
    }


async def new_recordings(
    backend: BackendStubProcess, known: dict[RecordingKey, int], expected: int
) -> list[dict[str, Any]]:
    """The recordings uploaded since `known` was taken (waiting, bounded, for `expected` of
    them), each with its size and its length read from the file."""
    deadline = time.monotonic() + (RECORDINGS_WAIT_S if expected else 0.0)
    while True:
        fresh = {k: v for k, v in (await held_recordings(backend)).items() if k not in known}
        if len(fresh) >= expected or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.5)
    found: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=30) as client:
        for (sid, attempt, part), size in sorted(fresh.items()):
            response = await client.get(f"{backend.control_url}/recordings/{sid}/{attempt}/{part}")
            seconds = ogg_seconds(response.content) if response.is_success else None
            found.append(
                {
                    "session_id": sid,
                    "attempt": attempt,
                    "part": part,
                    "bytes": size,
                    "seconds": round(seconds, 2) if seconds is not None else None,
                    "mb_per_min": (round(size / MB / (seconds / 60), 3) if seconds else None),
                }
            )
    return found


def recording_figures(recordings: list[dict[str, Any]], expected: int) -> dict[str, Any]:
    """A level's recordings summed: MiB per minute of recorded call (all bytes / all seconds)."""
    timed = [r for r in recordings if r["seconds"]]
    total_bytes = sum(r["bytes"] for r in timed)
    total_seconds = sum(r["seconds"] for r in timed)
    return {
        "recordings_expected": expected,
        "recordings": recordings,
        "recording_mb_per_min": (
            round(total_bytes / MB / (total_seconds / 60), 3) if total_seconds else None
        ),
    }


def memory_mb(pid: int) -> dict[str, float] | None:
    try:
        info = psutil.Process(pid).memory_full_info()
    except psutil.Error:
        return None
    return {
        "pss_mb": round(getattr(info, "pss", 0) / MB, 1),
        "uss_mb": round(info.uss / MB, 1),
        "rss_mb": round(info.rss / MB, 1),
    }


def log_records(proc: ManagedProcess) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for line in proc.log_text().splitlines():
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                records.append(json.loads(line))
    return records


def job_pids(worker: ManagedProcess) -> dict[str, int]:
    """job id -> pid of the job process serving it, from the worker's log: records of the job
    process carry the job's id and its own pid (the main process logs job ids too: skipped)."""
    found: dict[str, int] = {}
    for record in log_records(worker):
        pid = record.get("pid")
        if "job_id" in record and isinstance(pid, int) and pid != worker.pid:
            found.setdefault(str(record["job_id"]), pid)
    return found


def inference_pids(worker: ManagedProcess) -> list[int]:
    """The worker's inference process (the end-of-turn model with TURN_DETECTION=model, once per
    worker), from the main process's records about it (they carry `inference: true` and its
    pid); none where no runner is registered."""
    return sorted(
        {
            record["pid"]
            for record in log_records(worker)
            if record.get("inference") is True
            and isinstance(record.get("pid"), int)
            and record["pid"] != worker.pid
        }
    )


def worker_tree(worker_pid: int) -> dict[int, str]:
    """Every live process of the worker with its command line (to tell the forkserver)."""
    tree: dict[int, str] = {}
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(worker_pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                tree[child.pid] = " ".join(child.cmdline())
    return tree


def pin_threads(pids: list[int], cpus: set[int]) -> int:
    """Every thread of these processes onto `cpus` (a thread's affinity is its own; processes
    and threads started later inherit their parent's). Returns the threads moved."""
    moved = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(tid), cpus)
                    moved += 1
    return moved


def affinity(pid: int) -> set[int]:
    try:
        return os.sched_getaffinity(pid)
    except OSError:  # gone
        return set()


def place(stack: Stack, tree: dict[int, str]) -> bool:
    """Before a window (`--pin`): a pinned arm's worker gets the first CPU to itself and the
    harness (this process, the stubs and the other arm's idle worker) the others, as a
    deployment's worker shares no cores with the SFU; an unpinned arm's worker and the harness
    get every CPU back. Without `--pin` nothing is touched."""
    if not stack.pinned and not any(other.pinned for other in stack.neighbours):
        return False
    everything = set(stack.cpus) or os.sched_getaffinity(0)
    worker = [stack.worker.pid, *tree]
    harness = [os.getpid(), *stack.harness_pids.values()]
    for other in stack.neighbours:
        harness += [other.worker.pid, *worker_tree(other.worker.pid)]
    if stack.pinned:
        pin_threads(worker, {stack.cpus[0]})
        pin_threads(harness, set(stack.cpus[1:]))
    else:
        pin_threads(worker, everything)
        pin_threads(harness, everything)
    return stack.pinned


@dataclass
class CallerLoop:
    """One caller's turns during the window: speak, wait for the reply, pause, again."""

    caller: Caller
    latencies: list[float] = field(default_factory=list)  # end of WAV -> reply heard
    unanswered: int = 0

    async def run(self, *, start_delay: float, until: float) -> None:
        await asyncio.sleep(start_delay)
        while time.monotonic() < until - 5.0:  # no turn that cannot finish in the window
            _, spoke_until = await self.caller.speak(WAV, timeout=15)
            try:
                heard = await self.caller.wait_for_audio(after=spoke_until, timeout=10)
            except TimeoutError:
                self.unanswered += 1
                continue
            self.latencies.append(heard - spoke_until)
            await asyncio.sleep(TTS_MAX_SECONDS + GAP_AFTER_REPLY)


@dataclass
class Stack:
    """One arm's worker on the shared stand-in and stubs."""

    standin: StandIn
    processes: ProcessGroup
    worker: ManagedProcess
    harness_pids: dict[str, int]  # stubs: name -> pid
    agent_name: str = AGENT_NAME
    arm: str = "shipped"
    record: bool = False  # the calls' metadata says `record: true`
    backend: BackendStubProcess | None = None  # the recordings the calls uploaded
    pinned: bool = False  # --pin: the worker on cpus[0], the harness on the rest
    cpus: tuple[int, ...] = ()  # the CPUs the run started with
    neighbours: list[Stack] = field(default_factory=list)  # the other arms

    async def join(self, identity: str, room: str) -> Caller:
        token = participant_token(
            identity, room, api_key=self.standin.api_key, api_secret=self.standin.api_secret
        )
        caller = Caller(self.standin.url, token, agent_name=self.agent_name)
        await caller.connect()
        return caller


async def run_level(stack: Stack, n: int, seconds: float) -> dict[str, Any]:
    tag = f"{stack.arm}-{n}"
    callers = [await stack.join(f"caller-{tag}-{i}", f"room-{tag}-{i}") for i in range(n)]
    job_ids: list[str] = []
    known = await held_recordings(stack.backend) if stack.backend else {}
    try:
        for i in range(n):
            metadata: dict[str, Any] = {
                "scenarioId": "default",
                "userId": f"u{i}",
                "participantIdentity": f"caller-{tag}-{i}",
            }
            if stack.record:
                metadata["record"] = True  # the platform's consent (issue 24)
            job_id = await stack.standin.dispatch(
                f"room-{tag}-{i}", json.dumps(metadata), stack.agent_name
            )
            job_ids.append(job_id)
        await asyncio.gather(*(c.wait_for_audio(timeout=60) for c in callers))  # greetings
        await asyncio.sleep(TTS_MAX_SECONDS + 0.5)  # let the greetings finish
        pids = job_pids(stack.worker)
        jobs = {job_id: pids[job_id] for job_id in job_ids if job_id in pids}
        # the job processes' Python threads of note, by native id (~1.5 s, before the window)
        names = await asyncio.gather(*(python_thread_names(pid) for pid in jobs.values()))
        named = dict(zip(jobs.values(), names, strict=True))
        result = await measure(stack, callers, jobs, n, seconds, named)
    finally:
        for caller in callers:
            with contextlib.suppress(Exception):
                await caller.end_call(timeout=5)
        for caller in callers:
            with contextlib.suppress(Exception):
                await caller.leave()
        # the job processes end once their calls are delivered; wait for them (bounded)
        deadline = time.monotonic() + 30
        pids_now = job_pids(stack.worker)
        for job_id in job_ids:
            pid = pids_now.get(job_id)
            while pid and psutil.pid_exists(pid) and time.monotonic() < deadline:
                with contextlib.suppress(psutil.Error):
                    if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                        break
                await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)
    # the calls' recordings, uploaded after their transcripts (none expected when not recorded)
    if stack.backend is not None:
        expected = n if stack.record else 0
        result.update(
            recording_figures(await new_recordings(stack.backend, known, expected), expected)
        )
    return result


async def measure(
    stack: Stack,
    callers: list[Caller],
    jobs: dict[str, int],
    n: int,
    seconds: float,
    named: dict[int, dict[int, str] | None] | None = None,
) -> dict[str, Any]:
    worker_pid = stack.worker.pid
    tree = worker_tree(worker_pid)
    job_set = set(jobs.values())
    # the forkserver is the main process's child; every job process is the forkserver's child
    # and shows the same command line
    direct: set[int] = set()
    with contextlib.suppress(psutil.Error):
        direct = {child.pid for child in psutil.Process(worker_pid).children()}
    forkserver = [pid for pid, cmd in tree.items() if pid in direct and "forkserver" in cmd]
    inference = [pid for pid in inference_pids(stack.worker) if pid in tree]
    others = [
        pid for pid in tree if pid not in job_set and pid not in forkserver and pid not in inference
    ]
    groups: dict[str, list[int]] = {
        "worker_main": [worker_pid],
        "job_processes": sorted(job_set),
        "inference_process": inference,  # the end-of-turn model, shared by the calls
        "forkserver": forkserver,
        "worker_other": others,  # the prewarmed idle process(es), the resource tracker
        "harness_this_process": [os.getpid()],  # stand-in SFU + callers
        "harness_stubs": list(stack.harness_pids.values()),
    }
    pinned = place(stack, tree)
    # what the scheduler was told, read back: the job processes' and the harness's CPUs
    placed = {
        "job_processes": sorted({c for pid in job_set for c in affinity(pid)}),
        "harness": sorted(os.sched_getaffinity(0)),
        "other_workers": sorted({c for o in stack.neighbours for c in affinity(o.worker.pid)}),
    }
    log_offset = len(log_records(stack.worker))
    load_before = os.getloadavg()
    machine_before = psutil.cpu_times()
    named = named or {}
    before = {pid: cpu_seconds(pid) for pids in groups.values() for pid in pids}
    threads_before = {pid: thread_cpu(pid, named.get(pid)) for pid in job_set}
    wakeups_before = {pid: thread_wakeups(pid, named.get(pid)) for pid in job_set}
    started = time.monotonic()
    until = started + seconds
    loops = [CallerLoop(c) for c in callers]
    tasks = [
        asyncio.create_task(loop.run(start_delay=i * TURN_PERIOD / n, until=until))
        for i, loop in enumerate(loops)
    ]
    await asyncio.sleep(seconds / 2)
    memory = {str(pid): memory_mb(pid) for pid in sorted(job_set)}
    memory_main = memory_mb(worker_pid)
    memory_forkserver = {str(pid): memory_mb(pid) for pid in forkserver}
    memory_other = {str(pid): memory_mb(pid) for pid in others}
    memory_inference = {str(pid): memory_mb(pid) for pid in inference}
    await asyncio.sleep(max(0.0, until - time.monotonic()))
    after = {pid: cpu_seconds(pid) for pids in groups.values() for pid in pids}
    threads_after = {pid: thread_cpu(pid, named.get(pid)) for pid in job_set}
    wakeups_after = {pid: thread_wakeups(pid, named.get(pid)) for pid in job_set}
    window = time.monotonic() - started
    machine_after = psutil.cpu_times()
    load_after = os.getloadavg()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    # the job processes' own warnings in the window (slow VAD, a blocked event loop, ...)
    warnings: dict[str, int] = {}
    for record in log_records(stack.worker)[log_offset:]:
        if record.get("level") in ("WARNING", "ERROR") and record.get("pid") in job_set:
            key = str(record.get("message", ""))[:60]
            warnings[key] = warnings.get(key, 0) + 1

    # where a job process's CPU goes, summed over the job processes (a thread that ended in the
    # window is missing: its time is in the process total only)
    threads: dict[str, float] = {}
    for pid, names in threads_after.items():
        for name, seconds_after in names.items():
            spent = seconds_after - threads_before.get(pid, {}).get(name, 0.0)
            threads[name] = threads.get(name, 0.0) + spent
    wakeups: dict[str, float] = {}
    for pid, counts in wakeups_after.items():
        for name, count in counts.items():
            woke = count - wakeups_before.get(pid, {}).get(name, 0)
            wakeups[name] = wakeups.get(name, 0.0) + woke / window
    cpu: dict[str, float] = {}
    vanished: list[int] = []
    for name, pids in groups.items():
        total = 0.0
        for pid in pids:
            b, a = before.get(pid), after.get(pid)
            if b is None or a is None:
                vanished.append(pid)
                continue
            total += a - b
        cpu[name] = round(total, 3)
    machine_busy = sum(
        getattr(machine_after, k) - getattr(machine_before, k)
        for k in ("user", "nice", "system", "irq", "softirq", "steal")
    )
    ours = sum(cpu.values())
    # what the calls cost the worker: its main process, their job processes and the inference
    # process their end-of-turn predictions run in
    worker_cost = cpu["worker_main"] + cpu["job_processes"] + cpu["inference_process"]
    per_call = worker_cost / (window * n)
    latencies = [x for loop in loops for x in loop.latencies]
    pss = [m["pss_mb"] for m in memory.values() if m]
    return {
        "n": n,
        "pinned": pinned,
        "cpus_allowed": placed,
        "window_s": round(window, 2),
        "jobs_found": len(job_set),
        "cpu_s": cpu,
        "cpu_s_per_call_s": round(per_call, 4),
        "cpu_s_per_call_s_with_forkserver_and_idle": round(
            (worker_cost + cpu["forkserver"] + cpu["worker_other"]) / (window * n), 4
        ),
        "calls_per_core": round(1 / per_call, 1) if per_call > 0 else None,
        "harness_cores": round((cpu["harness_this_process"] + cpu["harness_stubs"]) / window, 3),
        "machine_cores_busy": round(machine_busy / window, 3),
        "other_cores_busy": round(max(0.0, machine_busy - ours) / window, 3),
        # the whole machine busy: the callers' turns then run late and the figures mean less
        "machine_saturated": machine_busy / window >= 0.9 * (os.cpu_count() or 1),
        # the stand-in and the callers share this process's one GIL: near a full core, media
        # and turns run late on the harness side, whatever the worker does
        "harness_saturated": cpu["harness_this_process"] / window >= 0.85,
        "pss_mb_per_job": memory,
        "pss_mb_max": max(pss) if pss else None,
        "pss_mb_mean": round(statistics.fmean(pss), 1) if pss else None,
        "memory_worker_main": memory_main,
        "memory_forkserver": memory_forkserver,
        "memory_worker_other": memory_other,
        "memory_inference_process": memory_inference,
        "turns": len(latencies),
        "unanswered": sum(loop.unanswered for loop in loops),
        "reply_latency_median_ms": (
            round(statistics.median(latencies) * 1000, 1) if latencies else None
        ),
        "job_cpu_s_by_thread": {
            k: round(v, 3) for k, v in sorted(threads.items(), key=lambda kv: -kv[1]) if v >= 0.01
        },
        # summed over the job processes, like the CPU above
        "job_wakeups_per_s_by_thread": {
            k: round(v, 1) for k, v in sorted(wakeups.items(), key=lambda kv: -kv[1]) if v >= 1
        },
        # whether the job processes' Python threads of note could be named (py-spy)
        "python_threads_named": bool(named) and all(v is not None for v in named.values()),
        "job_warnings": warnings,
        "vanished_pids": vanished,
        "loadavg_before": [round(v, 2) for v in load_before],
        "loadavg_after": [round(v, 2) for v in load_after],
    }


@dataclass(frozen=True)
class Arm:
    """A worker to measure: this checkout (`shipped`) or another commit's code (`baseline`),
    with the same settings, but for `env` (`--baseline-env`: today's value of a setting)."""

    name: str
    source: Path
    ref: str | None = None  # None: this checkout
    record: bool = False  # its calls' metadata says `record: true` (issue 24)
    env: dict[str, str] = field(default_factory=dict)
    python: str = sys.executable  # the interpreter that runs its worker (`--worker-python`)


_INTERPRETER_FACTS = """
import json, platform, sys, sysconfig
args = sysconfig.get_config_var("CONFIG_ARGS") or ""
with open("/proc/self/maps") as maps:
    shared = any("libpython" in line for line in maps)
print(json.dumps({
    "executable": sys.executable,
    "version": platform.python_version(),
    "configure_enable_optimizations": "--enable-optimizations" in args,
    "configure_with_lto": "--with-lto" in args,
    "libpython_shared": shared,
}))
"""


def interpreter(python: str) -> dict[str, Any]:
    """What runs an arm's worker: an interpreter linked to a shared libpython and built without
    PGO (pyenv's default) runs the same Python code slower than the image's build
    (docs/performance.md)."""
    out = subprocess.run(
        [python, "-c", _INTERPRETER_FACTS], capture_output=True, text=True, check=True, timeout=30
    )
    facts: dict[str, Any] = json.loads(out.stdout)
    return facts


def export_commit(ref: str, into: Path) -> Path:
    """The tree of `ref` as plain files (git archive: no worktree to clean up after a kill)."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", "--format=tar", ref],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def level_stats(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """One arm's windows at one level (`--repeat`): their median, the quietest and the dearest.
    One build's 30 s windows spread by up to ~40 % on this machine (docs/performance.md), so a
    median over interleaved windows says more than any one of them."""
    costs = sorted(w["cpu_s_per_call_s"] for w in windows)
    median = statistics.median(costs)
    pss = [w["pss_mb_max"] for w in windows if w["pss_mb_max"] is not None]
    replies = [w["reply_latency_median_ms"] for w in windows if w["reply_latency_median_ms"]]
    return {
        "windows": len(costs),
        "cpu_s_per_call_s_median": round(median, 4),
        "cpu_s_per_call_s_min": costs[0],
        "cpu_s_per_call_s_max": costs[-1],
        "calls_per_core_median": round(1 / median, 1) if median > 0 else None,
        "calls_per_core_quietest": round(1 / costs[0], 1) if costs[0] > 0 else None,
        "harness_cores_median": round(statistics.median(w["harness_cores"] for w in windows), 3),
        "pss_mb_max": max(pss) if pss else None,
        "reply_latency_median_ms": round(statistics.median(replies), 1) if replies else None,
    }


def summary_of(levels: list[dict[str, Any]]) -> dict[str, Any]:
    by_level = {
        str(n): level_stats([lvl for lvl in levels if lvl["n"] == n])
        for n in sorted({lvl["n"] for lvl in levels})
    }
    one = by_level.get("1")
    pss_all = [lvl["pss_mb_max"] for lvl in levels if lvl["pss_mb_max"] is not None]
    return {
        "calls_per_core_n1": one["calls_per_core_median"] if one else None,
        "cpu_s_per_call_s_n1": one["cpu_s_per_call_s_median"] if one else None,
        "pss_mb_max": max(pss_all) if pss_all else None,
        "by_level": by_level,
    }


def paired(first: list[dict[str, Any]], second: list[dict[str, Any]]) -> dict[str, Any]:
    """The second arm against the first, window by window: each level's windows of one round
    ran back to back, so their ratio cancels most of the machine's spell (the median of those
    ratios, per level)."""
    out: dict[str, Any] = {}
    for n in sorted({lvl["n"] for lvl in first}):
        a = {lvl.get("window", 0): lvl for lvl in first if lvl["n"] == n}
        b = {lvl.get("window", 0): lvl for lvl in second if lvl["n"] == n}
        ratios = [
            round(b[w]["cpu_s_per_call_s"] / a[w]["cpu_s_per_call_s"], 3)
            for w in sorted(a)
            if w in b and a[w]["cpu_s_per_call_s"] > 0
        ]
        if ratios:
            out[str(n)] = {"ratios": ratios, "ratio_median": round(statistics.median(ratios), 3)}
    return out


def arms_of(args: argparse.Namespace, baseline_source: Path | None) -> list[Arm]:
    """The workers to measure, in the order their windows run: the baseline first (its code
    exported to `baseline_source`), then this checkout; each on `--worker-python`, the baseline
    on `--baseline-python` when given."""
    python = args.worker_python or sys.executable
    if args.record_arms:  # the same code, calls not recorded and recorded
        arms = [
            Arm("off", REPO_ROOT, python=python),
            Arm("on", REPO_ROOT, record=True, python=python),
        ]
    else:
        arms = [Arm("shipped", REPO_ROOT, record=args.record, python=python)]
    if args.baseline and baseline_source is not None:
        baseline_python = args.baseline_python or python
        arms.insert(
            0,
            Arm(
                "baseline",
                baseline_source,
                args.baseline,
                args.record,
                args.baseline_env,
                baseline_python,
            ),
        )
    return arms


async def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-capacity-deployed-"))
    cpus = tuple(sorted(os.sched_getaffinity(0)))
    processes = ProcessGroup(work / "logs")
    # --sfu livekit: the stand-in forwards RTP and negotiates DTX as LiveKit's SFU does
    as_livekit = args.sfu == "livekit"
    standin = StandIn(port=free_port(), forward_rtp=as_livekit, negotiate_dtx=as_livekit)
    await standin.start()
    source = export_commit(args.baseline, work / "baseline") if args.baseline else None
    arms = arms_of(args, source)
    levels: dict[str, list[dict[str, Any]]] = {arm.name: [] for arm in arms}
    worker_exe: dict[str, str] = {}  # what the kernel says each arm's worker runs
    pythons: dict[str, dict[str, Any]] = {}
    overrides = {"NUM_IDLE_PROCESSES": "1", **args.env}  # --env wins
    worker_env_used = {"LOAD_THRESHOLD": "1000", **overrides}
    problem: str | None = None
    try:
        # before anything is measured: an interpreter that cannot run stops the bench here
        pythons = {arm.name: interpreter(arm.python) for arm in arms}
        openai, backend = await asyncio.gather(
            start_openai_stub(processes, transcript=HEARD, tts_max_seconds=TTS_MAX_SECONDS),
            start_backend_stub(processes, key=SERVICE_KEY),
        )
        stacks: list[Stack] = []
        for arm in arms:  # every arm's worker up (and idle) for the whole run
            agent_name = f"{AGENT_NAME}-{arm.name}"
            env = worker_env(
                livekit_url=standin.url,
                api_key=standin.api_key,
                api_secret=standin.api_secret,
                agent_name=agent_name,
                data_dir=work / "data" / arm.name,
                OPENAI_BASE_URL=openai.base_url,
                BACKEND_URL=backend.url,
                INTERNAL_SERVICE_KEY=SERVICE_KEY,
                **{**overrides, **arm.env},
            )
            worker = processes.start_worker(
                env, name=f"worker-{arm.name}", source=arm.source, python=arm.python
            )
            with contextlib.suppress(OSError):
                worker_exe[arm.name] = os.readlink(f"/proc/{worker.pid}/exe")
            stacks.append(
                Stack(
                    standin,
                    processes,
                    worker,
                    {"openai_stub": openai.proc.pid, "backend_stub": backend.proc.pid},
                    agent_name=agent_name,
                    arm=arm.name,
                    record=arm.record,
                    backend=backend,
                    pinned=args.pin in ("all", arm.name),
                    cpus=cpus,
                )
            )
        for stack in stacks:
            stack.neighbours = [other for other in stacks if other is not stack]
            await standin.wait_for_worker(stack.agent_name, timeout=60)
        for n in args.levels:  # the arms side by side at each level, in turn: A B A B ...
            for window in range(args.repeat):
                for stack in stacks:
                    print(f"  N = {n}, {stack.arm}, window {window + 1} ...", flush=True)
                    level = await run_level(stack, n, args.seconds)
                    levels[stack.arm].append({"window": window, **level})
    except Exception as error:  # a benchmark reports what it got and why it stopped
        problem = stopped(error, processes)
    finally:
        await stop_stack(processes, standin, work, keep_logs=args.keep_logs)
    primary = arms[-1].name  # `shipped`, or `on` with --record-arms
    return {
        "bench": "capacity_deployed",
        "definition": (
            "CPU-seconds of the worker's main process + the job processes serving the calls + "
            "the inference process (the end-of-turn model, when there is one), per second of "
            "call, over a fixed window of live calls with Opus/WebRTC media through the e2e "
            "stand-in; PSS of each job process sampled mid-call"
        ),
        "machine": machine_info(),
        "loadavg_end": [round(v, 2) for v in os.getloadavg()],
        "smoke": args.smoke,
        "seconds_per_level": args.seconds,
        "windows_per_level": args.repeat,
        "sfu": args.sfu,
        # --pin: which arms ran with the worker on cpus[0] and the harness on the rest
        "pin": args.pin,
        "cpus": list(cpus),
        "wav": WAV.name,
        "worker_env": worker_env_used,
        "stt_mode_shipped": Settings.model_fields["stt_mode"].default,  # unless --env sets it
        "turn_detection": args.env.get(
            "TURN_DETECTION", Settings.model_fields["turn_detection"].default
        ),
        "goals": {"calls_per_core_min": GOAL_CALLS_PER_CORE, "pss_mb_max": GOAL_PSS_MB},
        "record": args.record,
        "record_arms": args.record_arms,
        "arms": {
            arm.name: {
                "code": arm.ref or "this checkout",
                "env": arm.env,
                "python": {
                    **pythons.get(arm.name, {"executable": arm.python}),
                    "worker_exe": worker_exe.get(arm.name),
                },
                "record": arm.record,
                "pinned": args.pin in ("all", arm.name),
                "levels": levels[arm.name],
                "summary": summary_of(levels[arm.name]),
            }
            for arm in arms
        },
        # with --baseline or --record-arms: the second arm's cost over the first's, per window
        "paired": paired(levels[arms[0].name], levels[arms[-1].name]) if len(arms) == 2 else {},
        # the shipped arm's (with --record-arms the recorded one's), as before arms existed
        "levels": levels[primary],
        "summary": summary_of(levels[primary]),
        "problem": problem,
    }


def report(result: dict[str, Any]) -> None:
    print(
        "capacity as deployed (python -m agent start, job process per call, WebRTC/Opus via the "
        "stand-in)"
    )
    header = (
        f"{'arm':>8} {'N':>3} {'win':>3} {'CPU-s/call-s':>12} {'calls/core':>10} {'main':>6} "
        f"{'jobs':>6} {'infer':>6} {'fork+idle':>9} {'harness':>8} {'others':>7} "
        f"{'PSS/job MB':>14} {'turns':>5} {'unans':>5} {'reply ms':>8}"
    )
    print(header)
    arms: dict[str, Any] = result["arms"]
    rows = sorted(
        (
            (lvl["n"], lvl.get("window", 0), i, name, lvl)
            for i, (name, arm) in enumerate(arms.items())
            for lvl in arm["levels"]
        ),
        key=lambda row: (row[0], row[1], row[2]),
    )
    for _, _, _, name, lvl in rows:
        cpu, window = lvl["cpu_s"], lvl["window_s"]
        pss = [m["pss_mb"] for m in lvl["pss_mb_per_job"].values() if m]
        print(
            f"{name:>8} {lvl['n']:>3} {lvl.get('window', 0) + 1:>3} "
            f"{lvl['cpu_s_per_call_s']:>12.4f} "
            f"{lvl['calls_per_core'] or 0:>10.1f} "
            f"{cpu['worker_main'] / window:>6.3f} {cpu['job_processes'] / window:>6.3f} "
            f"{cpu.get('inference_process', 0.0) / window:>6.3f} "
            f"{(cpu['forkserver'] + cpu['worker_other']) / window:>9.3f} "
            f"{lvl['harness_cores']:>8.3f} {lvl['other_cores_busy']:>7.3f} "
            f"{'/'.join(f'{p:.0f}' for p in pss) or '-':>14} {lvl['turns']:>5} "
            f"{lvl['unanswered']:>5} {lvl['reply_latency_median_ms'] or 0:>8.0f}"
        )
    for _, _, _, name, lvl in rows:
        where = f"{name}, N = {lvl['n']}, window {lvl.get('window', 0) + 1}"
        threads = ", ".join(f"{k} {v:.2f}" for k, v in lvl["job_cpu_s_by_thread"].items())
        print(f"  {where}: job CPU-s by thread: {threads}")
        if woke := lvl.get("job_wakeups_per_s_by_thread"):
            per_s = ", ".join(f"{k} {v:.0f}" for k, v in woke.items())
            print(f"  {where}: job wake-ups per second by thread: {per_s}")
        inference = [m for m in lvl.get("memory_inference_process", {}).values() if m]
        if inference:
            print(f"  {where}: inference process PSS {inference[0]['pss_mb']} MB")
        if lvl["job_warnings"]:
            print(f"  {where}: job warnings in the window: {lvl['job_warnings']}")
        if lvl["machine_saturated"]:
            print(f"  {where}: the machine was saturated (turns late)")
        if lvl["harness_saturated"]:
            print(f"  {where}: the harness process was near one full core")
        if "recordings" in lvl and (lvl["recordings_expected"] or lvl["recordings"]):
            encode = lvl["job_cpu_s_by_thread"].get(ENCODE_THREAD)
            encode_text = (
                f"{encode / (lvl['window_s'] * lvl['n']):.4f} CPU-s per call-s"
                if encode is not None
                else ("not seen" if lvl["python_threads_named"] else "not told apart (no py-spy)")
            )
            files = ", ".join(
                f"{r['bytes'] / MB:.2f} MiB / {r['seconds']} s" for r in lvl["recordings"]
            )
            print(
                f"  {where}: recordings held {len(lvl['recordings'])} of "
                f"{lvl['recordings_expected']}, {lvl['recording_mb_per_min'] or 0:.3f} MiB per "
                f"minute of call (files: {files}); encode thread {encode_text}"
            )
    for name, arm in arms.items():  # each level's windows together (--repeat)
        for n, st in arm["summary"]["by_level"].items():
            if st["windows"] > 1:
                print(
                    f"  {name}, N = {n}, {st['windows']} windows: CPU-s per call-s median "
                    f"{st['cpu_s_per_call_s_median']:.4f} (range {st['cpu_s_per_call_s_min']:.4f}"
                    f"-{st['cpu_s_per_call_s_max']:.4f}), calls per core median "
                    f"{st['calls_per_core_median']}, quietest {st['calls_per_core_quietest']}"
                )
    if len(arms) == 2:  # the second arm against the first, level by level
        (first, a), (second, b) = arms.items()
        for n, st_a in a["summary"]["by_level"].items():
            st_b = b["summary"]["by_level"].get(n)
            if st_b is None:
                continue
            before, after = st_a["cpu_s_per_call_s_median"], st_b["cpu_s_per_call_s_median"]
            pair = result.get("paired", {}).get(n)
            ratios = (
                f", window by window {second}/{first} {pair['ratios']} (median "
                f"{pair['ratio_median']})"
                if pair and len(pair["ratios"]) > 1
                else ""
            )
            print(
                f"  N = {n}: {second} vs {first}: {after - before:+.4f} CPU-s per call-s "
                f"({(after - before) / before * 100 if before else 0:+.1f} %), calls per core "
                f"{st_a['calls_per_core_median'] or 0:.1f} -> "
                f"{st_b['calls_per_core_median'] or 0:.1f}, PSS max {st_a['pss_mb_max']} -> "
                f"{st_b['pss_mb_max']} MB{ratios}"
            )
    for name, arm in arms.items():
        settings = "".join(f", {key}={value}" for key, value in arm.get("env", {}).items())
        pinned = (
            f", the worker on CPU {result['cpus'][0]} and the harness on the others"
            if arm.get("pinned")
            else ""
        )
        print(f"  {name}: code {arm['code']}{settings}{pinned}")
    print(
        "  main/jobs/infer/fork+idle/harness/others in cores busy over the window (CPU-s/call-s "
        f"counts main + jobs + infer); goals: >= {GOAL_CALLS_PER_CORE:.0f} calls per core, "
        f"<= {GOAL_PSS_MB:.0f} MB PSS per job process"
    )
    print(f"  load average at the end: {result['loadavg_end']} (2 shared cores: figures are noisy)")
    if result["problem"]:
        print(f"  stopped early: {result['problem']}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--levels", default="1,2,4", help="concurrent calls, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window per level")
    parser.add_argument(
        "--json",
        type=Path,
        default=RESULTS_DIR / "bench_capacity_deployed.json",
        metavar="PATH",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs")
    parser.add_argument(
        "--baseline",
        metavar="REF",
        help="also measure the worker of this commit (git ref), side by side at each level",
    )
    parser.add_argument(
        "--record",
        action="store_true",
        help="dispatch every call with `record: true` (the worker records it; issue 24)",
    )
    parser.add_argument(
        "--record-arms",
        action="store_true",
        help="two workers of this checkout side by side: arm `off` (calls not recorded) and "
        "arm `on` (`record: true`)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="K",
        help="windows per level and arm, the arms interleaved (A B A B ...); the report gives "
        "each level's median, range and the window-by-window ratio of the two arms",
    )
    parser.add_argument(
        "--pin",
        choices=("all", "baseline", "shipped"),
        help="during that arm's windows (or every arm's) the worker runs on the first CPU and "
        "the harness on the others, as deployed the worker shares no cores with the SFU; the "
        "other arm's windows run unpinned (with --baseline HEAD --pin shipped: what sharing "
        "costs)",
    )
    parser.add_argument("--smoke", action="store_true", help="N = 1 for 8 s, to check it runs")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a worker setting to override (e.g. TURN_DETECTION=vad), repeatable",
    )
    parser.add_argument(
        "--baseline-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting for the baseline arm only, over --env (with --baseline HEAD: the same "
        "code with today's value of a setting against the shipped one), repeatable",
    )
    parser.add_argument(
        "--worker-python",
        metavar="PATH",
        help="the interpreter that runs the workers (default: this one), e.g. an environment on "
        "an optimized build like the image's: docs/performance.md says how to make one",
    )
    parser.add_argument(
        "--baseline-python",
        metavar="PATH",
        help="the baseline arm's interpreter, over --worker-python (with --baseline HEAD: the "
        "same code on two interpreters)",
    )
    parser.add_argument(
        "--sfu",
        choices=("livekit", "transcode"),
        default="transcode",
        help="livekit: the stand-in forwards each Opus packet unchanged and answers publishers "
        "with DTX, as LiveKit's SFU does; transcode: it decodes and re-encodes every track and "
        "negotiates no DTX (every figure before 2026-12-07 14:30 UTC)",
    )
    args = parser.parse_args(argv)
    if args.record_arms and (args.baseline or args.record):
        parser.error("--record-arms is its own pair of arms: not with --baseline or --record")
    if args.repeat < 1:
        parser.error(f"--repeat is a number of windows, at least 1: got {args.repeat}")
    if args.pin and len(os.sched_getaffinity(0)) < 2:
        parser.error(
            f"--pin gives the worker a CPU of its own: this process may use "
            f"{len(os.sched_getaffinity(0))} CPU; run it where two or more are allowed"
        )
    if args.pin == "baseline" and not args.baseline:
        parser.error("--pin baseline pins the baseline arm: it needs --baseline REF")
    if args.record_arms and args.pin in ("baseline", "shipped"):
        parser.error("with --record-arms the arms are `off` and `on`: use --pin all")
    if args.baseline_env and not args.baseline:
        parser.error("--baseline-env sets the baseline arm's settings: it needs --baseline REF")
    if args.baseline_python and not args.baseline:
        parser.error("--baseline-python runs the baseline arm: it needs --baseline REF")
    pythons = {"--worker-python": args.worker_python, "--baseline-python": args.baseline_python}
    for option, path in pythons.items():
        if path and not os.access(path, os.X_OK):
            parser.error(f"{option} {path}: no executable there; give an environment's bin/python")
    args.env = env_overrides(args.env, parser)
    args.baseline_env = env_overrides(args.baseline_env, parser)
    args.levels = [int(x) for x in str(args.levels).split(",") if x.strip()]
    if args.smoke:
        args.levels, args.seconds = [1], 8.0
    run_in_test_netns(__file__, argv)  # WebRTC media skips loopback
    quiet_logging()
    result = asyncio.run(run(args))
    report(result)
    write_result(args.json, result)


if __name__ == "__main__":
    main()
