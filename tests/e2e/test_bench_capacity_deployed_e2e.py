"""bench/bench_capacity_deployed.py still runs: `--smoke` (one call for 8 s through the real
worker, the stand-in and WebRTC) with a baseline arm (`--baseline HEAD`: the same code exported
with git archive, a second worker) and two windows per arm (`--repeat 2`, the arms interleaved),
in its own process, inside this test namespace, writing its JSON where told. No figure is checked
(timings are the bench's business, not the suite's): only that both arms measured a call in each
window, found its job process, that the shipped arm's inference process (the end-of-turn model,
agent/end_of_turn.py) was found and counted, that the windows were summed up per arm and paired
across the arms, and that `--pin shipped` put the shipped arm's job processes on a CPU of their
own and the harness (with the idle baseline worker) on the others while the baseline's ran on
every CPU, that `--worker-python` ran both workers on the interpreter named, and that the job
threads' wake-ups were counted.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Final

import pytest

from tests.e2e.harness import run_bench_smoke
from tests.e2e.netns import in_test_netns

pytestmark = pytest.mark.e2e

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
BENCH: Final = REPO_ROOT / "bench" / "bench_capacity_deployed.py"
BENCH_TIMEOUT: Final = 240  # the smoke with a baseline and two windows aims at < 90 s


def test_bench_capacity_deployed_smoke_measures_both_arms(tmp_path: Path) -> None:
    if not in_test_netns():
        pytest.skip("runs only inside the test network namespace")
    out = tmp_path / "bench_capacity_deployed.json"
    # the shipped arm's worker on a CPU of its own (--pin) where there are two to share
    cpus = sorted(os.sched_getaffinity(0))
    pin = ["--pin", "shipped"] if len(cpus) >= 2 else []
    # the workers on a named interpreter (--worker-python): this one, so the smoke needs no other
    python = ["--worker-python", sys.executable]
    result, _ = run_bench_smoke(
        BENCH, out, "--baseline", "HEAD", "--repeat", "2", *pin, *python, timeout=BENCH_TIMEOUT
    )
    assert result["problem"] is None, result["problem"]
    assert set(result["arms"]) == {"baseline", "shipped"}
    for name, arm in result["arms"].items():
        # the kernel's word for what the worker ran, not the option echoed back
        assert arm["python"]["worker_exe"] == os.path.realpath(sys.executable), name
        assert arm["python"]["version"] == platform.python_version()
        assert [(lvl["n"], lvl["window"]) for lvl in arm["levels"]] == [(1, 0), (1, 1)]
        for level in arm["levels"]:
            assert level["jobs_found"] == 1, f"{name}: the call's job process was not found"
            assert level["pss_mb_max"] is not None
            assert level["cpu_s_per_call_s"] > 0
            # the rtc SDK's audio device ticks in every job process: its wake-ups were counted
            assert level["job_wakeups_per_s_by_thread"].get("SyntheticAudioD", 0) > 0, name
        costs = sorted(lvl["cpu_s_per_call_s"] for lvl in arm["levels"])
        one = arm["summary"]["by_level"]["1"]
        assert one["windows"] == 2
        assert (one["cpu_s_per_call_s_min"], one["cpu_s_per_call_s_max"]) == tuple(costs)
    assert len(result["paired"]["1"]["ratios"]) == 2
    for shipped in result["arms"]["shipped"]["levels"]:
        assert shipped["memory_inference_process"], "the end-of-turn model's process not found"
        assert shipped["cpu_s"]["inference_process"] >= 0
    if pin:  # read back from the scheduler during each window
        for baseline in result["arms"]["baseline"]["levels"]:
            assert baseline["pinned"] is False
            assert baseline["cpus_allowed"]["job_processes"] == cpus
        for shipped in result["arms"]["shipped"]["levels"]:
            assert shipped["pinned"] is True
            assert shipped["cpus_allowed"] == {
                "job_processes": cpus[:1],
                "harness": cpus[1:],
                "other_workers": cpus[1:],  # the baseline's, idle beside it
            }
