"""Packet splitting: the data-channel packets of one turn, none over MAX_PACKET_BYTES.

Rule: a turn whose JSON packet would pass the limit is split on code-point boundaries into
`parts` packets (part = 1..parts, every field repeated, texts concatenated in part order); sizes
are measured on the serialized packet, since JSON escaping can grow the text.
"""

from __future__ import annotations

import json

from agent.models import MAX_PACKET_BYTES, Turn, TurnMessage


def _json_size(char: str) -> int:
    """UTF-8 bytes that `char` takes inside a JSON string as `WireModel.to_json_bytes` writes it
    (ensure_ascii=False: only quotes, backslashes and control characters are escaped)."""
    code = ord(char)
    if char in '"\\':
        return 2
    if code < 0x20:
        return len(json.dumps(char)) - 2  # \n, \t ... or \u00XX
    if code < 0x80:
        return 1
    if code < 0x800:
        return 2
    if code < 0x10000:
        return 3
    return 4


def _split_text(text: str, budget: int) -> list[str]:
    """Greedy split on code-point boundaries: a Python str is a sequence of code points, so no
    chunk can end inside a UTF-8 sequence; each chunk's escaped size is at most `budget`."""
    chunks: list[str] = []
    start = 0
    size = 0
    for index, char in enumerate(text):
        char_size = _json_size(char)
        if size + char_size > budget and index > start:
            chunks.append(text[start:index])
            start, size = index, 0
        size += char_size
    chunks.append(text[start:])
    return chunks


def turn_packets(turn: Turn, *, session_id: str, max_bytes: int = MAX_PACKET_BYTES) -> list[bytes]:
    """The data-channel packets for one turn: one TurnMessage, or `parts` of them (part=1..parts,
    every field repeated, texts concatenated in part order) when the JSON would pass `max_bytes`.
    Sizes are measured on the serialized packet, since JSON escaping can grow the text."""
    whole = TurnMessage(
        session_id=session_id,
        seq=turn.seq,
        role=turn.role,
        text=turn.text,
        interrupted=turn.interrupted,
        started_at=turn.started_at,
        ended_at=turn.ended_at,
    )
    packet = whole.to_json_bytes()
    if len(packet) <= max_bytes:
        return [packet]
    # The envelope grows with the digits of part/parts: size it with the largest number of
    # that many digits, and retry with one more digit if the split needed more parts.
    digits = 1
    while True:
        widest = 10**digits - 1
        envelope = len(
            whole.model_copy(update={"text": "", "part": widest, "parts": widest}).to_json_bytes()
        )
        budget = max_bytes - envelope
        if budget < 6:  # the widest escape (\u00XX) must fit, or no split can succeed
            raise ValueError(f"packet envelope of {envelope} bytes leaves no room for text")
        chunks = _split_text(turn.text, budget)
        if len(str(len(chunks))) <= digits:
            break
        digits += 1
    parts = len(chunks)
    packets = [
        whole.model_copy(update={"text": chunk, "part": index, "parts": parts}).to_json_bytes()
        for index, chunk in enumerate(chunks, start=1)
    ]
    if any(len(p) > max_bytes for p in packets):  # a bug in the size arithmetic above
        raise ValueError("split produced a packet above the size limit")
    return packets
