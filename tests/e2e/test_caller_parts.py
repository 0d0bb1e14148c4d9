"""The caller's reassembly of `parts` packets (DESIGN.md, "Data channel"); no media."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.caller import PartsAssembler
from tests.e2e.tone_agent import split_in_parts


def parts_of(message: dict[str, Any], parts: int) -> list[dict[str, Any]]:
    return [json.loads(p) for p in split_in_parts(message, parts)]


def test_a_message_without_parts_passes_through() -> None:
    turn = {"type": "turn", "seq": 1, "text": "hi"}
    assert PartsAssembler().add("agent-1", turn) == turn


def test_parts_are_joined_in_part_order_whatever_the_arrival_order() -> None:
    turn = {"type": "turn", "v": 1, "seq": 7, "role": "assistant", "text": "héllo wörld, 👋 again"}
    packets = parts_of(turn, 3)
    assembler = PartsAssembler()
    assert assembler.add("agent-1", packets[2]) is None
    assert assembler.add("agent-1", packets[0]) is None
    assert assembler.add("agent-1", packets[1]) == turn
    assert assembler.incomplete == 0


def test_interleaved_messages_and_senders_do_not_mix() -> None:
    a = {"type": "turn", "seq": 1, "text": "aaaa"}
    b = {"type": "turn", "seq": 2, "text": "bbbb"}
    assembler = PartsAssembler()
    a1, a2 = parts_of(a, 2)
    b1, b2 = parts_of(b, 2)
    assert assembler.add("agent-1", a1) is None
    assert assembler.add("agent-1", b1) is None
    assert assembler.add("agent-2", a2) is None  # same fields, another sender
    assert assembler.add("agent-1", b2) == b
    assert assembler.add("agent-1", a2) == a
    assert assembler.incomplete == 1


def test_a_part_number_out_of_range_is_an_error() -> None:
    with pytest.raises(ValueError):
        PartsAssembler().add("agent-1", {"type": "turn", "text": "x", "part": 3, "parts": 2})
