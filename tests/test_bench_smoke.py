"""The benchmarks still run: each script on tiny input (`--smoke`) in its own process, writing its
JSON where told. No figure is checked (timings are the benches' business, not the suite's)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_TIMEOUT = 120

# script -> a key its JSON must carry
BENCHES = {
    "bench_cold_start": "calls",
    "bench_turn_overhead": "arms",
    "bench_capacity": "levels",
    "bench_journal": "journal",
    "bench_voice_latency": "arms",
    "bench_turn_taking": "arms",
    "probe_eot_resampling": "summary",
}


@pytest.mark.parametrize("name", sorted(BENCHES))
def test_bench_runs_on_tiny_input_and_writes_json(name: str, tmp_path: Path) -> None:
    out = tmp_path / f"{name}.json"
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / f"{name}.py"), "--smoke", "--json", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=BENCH_TIMEOUT,
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["smoke"] is True
    assert BENCHES[name] in result
    assert str(out) in completed.stdout  # it says where the figures went


def test_plot_draws_the_turn_latency_png_from_json(tmp_path: Path) -> None:
    source = tmp_path / "turn.json"
    source.write_text(
        json.dumps(
            {
                "arms": {
                    "ours": {"samples_ms": [584.0, 585.5, 583.2]},
                    "bare": {"samples_ms": [583.0, 582.1, 590.0]},
                },
                "comparison": {"ratio": 1.002, "diff_ms": 1.0},
                "machine": {"cpus": 2, "date_utc": "2026-01-01T00:00:00+00:00"},
            }
        )
    )
    png = tmp_path / "turn_latency.png"
    completed = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "bench" / "plot.py"),
            "--input",
            str(source),
            "--output",
            str(png),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=BENCH_TIMEOUT,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
