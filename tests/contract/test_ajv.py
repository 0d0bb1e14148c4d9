"""`python -m agent schema` compiled by Ajv (strict mode, draft 2020-12, ajv-formats), as the
TypeScript backend would use it: real bodies from the worker's delivery code accepted, broken
copies refused. Needs node and `npm ci --prefix tests/contract/ajv` (.ci/run does it); skipped
without them on a developer's machine, a failure under CI=true."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.backend import HttpBackend
from agent.models import SessionCreate
from tests.contract import bodies
from tests.contract.cases import BROKEN_SESSION_CREATES, BROKEN_TRANSCRIPTS
from tests.contract.conftest import CaptureServer
from tests.contract.oracle import golden, strict_json

AJV_DIR = Path(__file__).parent / "ajv"
REPO = Path(__file__).parents[2]


def node_or_skip() -> str:
    node = shutil.which("node")
    installed = (AJV_DIR / "node_modules" / "ajv" / "package.json").exists() and (
        AJV_DIR / "node_modules" / "ajv-formats" / "package.json"
    ).exists()
    if node is None or not installed:
        missing = "node" if node is None else "tests/contract/ajv/node_modules (npm ci)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"Ajv contract check cannot run under CI: {missing} missing")
        pytest.skip(f"{missing} missing: npm ci --prefix tests/contract/ajv")
    return node


def run_ajv(node: str, tmp_path: Path, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    schema = subprocess.run(
        [sys.executable, "-m", "agent", "schema"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    (tmp_path / "schema.json").write_text(schema, encoding="utf-8")
    (tmp_path / "cases.json").write_text(json.dumps(cases), encoding="utf-8")
    result = subprocess.run(
        [
            node,
            str(AJV_DIR / "validate.mjs"),
            str(tmp_path / "schema.json"),
            str(tmp_path / "cases.json"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    results: list[dict[str, Any]] = json.loads(result.stdout)
    assert len(results) == len(cases)
    return results


async def test_ajv_strict_accepts_real_bodies_and_refuses_broken_ones(
    tmp_path: Path, client: HttpBackend, capture: CaptureServer
) -> None:
    node = node_or_skip()
    valid: list[dict[str, Any]] = []
    for make in bodies.GOLDEN_CALLS.values():
        await client.post_transcript("sess-1", make(), deadline=10.0)
        sent = strict_json(capture.last("/transcript").body)
        valid.append({"definition": "TranscriptPayload", "body": sent})
    await client.create_session(
        SessionCreate.model_validate(golden("session_create")), room_sid="RM_1"
    )
    valid.append(
        {"definition": "SessionCreate", "body": strict_json(capture.last("/sessions").body)}
    )
    for name, definition in [
        ("turn_message", "TurnMessage"),
        ("interim_message", "InterimMessage"),
        ("end_message", "EndMessage"),
        # what the held-transcript GET answers: any source, any endedReason, unknown keys
        ("held_transcript_browser", "HeldTranscript"),
        ("transcript_in_progress", "HeldTranscript"),
    ]:
        valid.append({"definition": definition, "body": golden(name)})

    real = valid[0]["body"]  # the complete call: every kind of key present
    broken: list[tuple[str, dict[str, Any]]] = []
    for case, mutate in BROKEN_TRANSCRIPTS:
        body = copy.deepcopy(real)
        mutate(body)
        broken.append((case, {"definition": "TranscriptPayload", "body": body}))
    for case, mutate in BROKEN_SESSION_CREATES:
        body = copy.deepcopy(golden("session_create"))
        mutate(body)
        broken.append((case, {"definition": "SessionCreate", "body": body}))

    held = golden("held_transcript_browser")
    held["turns"][0]["role"] = "system"
    broken.append(("held turn role system", {"definition": "HeldTranscript", "body": held}))
    held = golden("held_transcript_browser")
    del held["turnCount"]
    broken.append(("held without turnCount", {"definition": "HeldTranscript", "body": held}))

    results = run_ajv(node, tmp_path, valid + [c for _, c in broken])
    accepted, refused = results[: len(valid)], results[len(valid) :]
    assert [r["errors"] for r in accepted] == [[] for _ in valid]
    assert [case for (case, _), r in zip(broken, refused, strict=True) if r["valid"]] == []
