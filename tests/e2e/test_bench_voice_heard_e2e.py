"""bench/bench_voice_heard.py still runs: `--smoke` (one reply per reply shape, through the real
worker, the stand-in and WebRTC) in its own process, inside this test namespace (the bench runs
in the namespace it finds), writing its JSON where told. No figure is checked (timings are the
bench's business, not the suite's): only that every reply shape was heard and timed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pytest

from tests.e2e.harness import run_bench_smoke
from tests.e2e.netns import in_test_netns

pytestmark = pytest.mark.e2e

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
BENCH: Final = REPO_ROOT / "bench" / "bench_voice_heard.py"
SHAPES: Final = ("short", "long")
BENCH_TIMEOUT: Final = 180  # the smoke aims at < 90 s


def test_bench_voice_heard_smoke_times_a_reply_of_each_shape(tmp_path: Path) -> None:
    if not in_test_netns():
        pytest.skip("runs only inside the test network namespace")
    out = tmp_path / "bench_voice_heard.json"
    result, completed = run_bench_smoke(BENCH, out, timeout=BENCH_TIMEOUT)
    assert result["smoke"] is True
    assert "arms" in result, result.get("problem")
    assert result["arms"], result.get("problem")
    for name, arm in result["arms"].items():
        assert arm["problem"] is None, f"{name}: {arm['problem']}"
        for shape in SHAPES:
            timeline = arm["shapes"][shape]["timeline_median_ms"]
            assert timeline["first_audio"] is not None, (
                f"{name}/{shape}: no reply heard\n{completed.stdout[-2000:]}"
            )
