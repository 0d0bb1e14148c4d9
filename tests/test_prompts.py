"""prompts/: every prompt name loads; a missing one is a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.models import Scenario
from agent.prompts import (
    PROMPT_NAMES,
    PromptError,
    load_prompt,
    load_scenario,
    scenario_ids,
)


@pytest.mark.parametrize("name", PROMPT_NAMES)
def test_every_prompt_name_loads_non_empty_text(name: str) -> None:
    assert load_prompt(name).strip()  # type: ignore[arg-type]


@pytest.mark.parametrize("scenario_id", scenario_ids())
def test_every_bundled_scenario_parses(scenario_id: str) -> None:
    scenario = load_scenario(scenario_id)
    assert isinstance(scenario, Scenario) and scenario.prompt and scenario.title


def test_the_default_scenario_is_bundled() -> None:
    assert "default" in scenario_ids()


def test_a_missing_prompt_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PromptError, match=r"greeting.*missing"):
        load_prompt("greeting", tmp_path)


def test_an_unknown_prompt_name_lists_the_known_ones() -> None:
    with pytest.raises(PromptError, match="known prompts: system"):
        load_prompt("nope")  # type: ignore[arg-type]


def test_a_missing_scenario_names_the_bundled_ones() -> None:
    with pytest.raises(PromptError, match="bundled: default"):
        load_scenario("does-not-exist")


def test_a_scenario_id_with_path_characters_is_refused() -> None:
    with pytest.raises(PromptError, match="invalid scenario id"):
        load_scenario("../system")


def test_a_scenario_without_title_is_refused(tmp_path: Path) -> None:
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "x.md").write_text("---\ngreeting: hi\n---\nbody\n")
    with pytest.raises(PromptError, match="needs a title"):
        load_scenario("x", tmp_path)


def test_the_resume_line_is_a_prompt_of_its_own() -> None:
    # DESIGN.md: the persona's greeting, apology and resume lines come from prompts/
    assert "resume" in PROMPT_NAMES
    written = (Path(__file__).resolve().parents[1] / "prompts" / "resume.md").read_text()
    assert load_prompt("resume") == written.strip()
