"""agent/first_phrase.py: the TTS gets the reply's first phrase on its own, through the real
StreamAdapter and the real OpenAI TTS plugin against the OpenAI stub (its recorded `speech`
requests are the oracle: what the provider was asked to say, in which pieces)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from livekit.agents import tokenize, tts

from agent.first_phrase import FirstPhraseTokenizer, first_phrase_end
from agent.pipeline import build_tts
from tests.support.openai_stub import OpenAIStub
from tests.support.settings import make_settings

SHORT_FIRST = "I hear you. That sounds like a lot to carry on your own for two whole weeks."
LONG_FIRST = (
    "I really want to understand what has been happening for you over these last few weeks, "
    "and what has made it so hard to talk about."
)


@pytest.fixture
async def stub() -> AsyncIterator[OpenAIStub]:
    async with OpenAIStub() as server:
        yield server


def tokens_as_streamed(text: str) -> list[str]:
    """The LLM's stream: a few characters at a time, as tokens arrive."""
    return [text[i : i + 4] for i in range(0, len(text), 4)]


async def spoken_requests(stub: OpenAIStub, text: str, **settings: str) -> list[str]:
    speech = build_tts(make_settings(OPENAI_BASE_URL=stub.base_url, **settings))
    if not speech.capabilities.streaming:  # what Agent.tts_node does with a non-streaming TTS
        speech = tts.StreamAdapter(
            tts=speech, sentence_tokenizer=tokenize.blingfire.SentenceTokenizer(retain_format=True)
        )
    stream = speech.stream()
    for token in tokens_as_streamed(text):
        stream.push_text(token)
    stream.end_input()
    async for _ in stream:
        pass
    await stream.aclose()
    await speech.aclose()
    return [str(req.body["input"]) for req in stub.requests_to("speech")]


@pytest.mark.parametrize(
    ("text", "first"),
    [
        ("I hear you. Tell", "I hear you."),
        ("Okay, so I think, maybe", "Okay, so I think,"),  # "Okay," is one word
        ("Yes. I can hear that you are tired of", "Yes. I can hear that you are tired"),
        ("One two three four five six seven eight nine", "One two three four five six seven eight"),
        ('She said "no." Then', 'She said "no."'),
        ("Well \u2014 I think", "Well \u2014"),
    ],
)
def test_the_first_phrase_ends_at_a_clause_mark_after_two_words_or_after_eight(
    text: str, first: str
) -> None:
    end = first_phrase_end(text)
    assert end is not None
    assert text[:end] == first


def test_a_word_still_arriving_does_not_end_the_first_phrase() -> None:
    assert first_phrase_end("I hear you.") is None  # "you." may be "you..." still
    assert first_phrase_end("One two three four five six seven eigh") is None


async def test_a_short_first_sentence_is_its_own_tts_request(stub: OpenAIStub) -> None:
    requests = await spoken_requests(stub, SHORT_FIRST)
    assert requests[0] == "I hear you."
    assert " ".join(r.strip() for r in requests) == SHORT_FIRST


async def test_a_long_first_sentence_starts_with_its_first_eight_words(stub: OpenAIStub) -> None:
    requests = await spoken_requests(stub, LONG_FIRST)
    assert requests[0] == "I really want to understand what has been"
    assert " ".join(r.strip() for r in requests) == LONG_FIRST


async def test_without_first_phrase_the_library_waits_for_the_whole_first_sentence(
    stub: OpenAIStub,
) -> None:
    # the library's tokenizer merges a sentence under 20 characters into the next one
    requests = await spoken_requests(stub, SHORT_FIRST, FIRST_PHRASE="false")
    assert requests == [SHORT_FIRST]


def test_tokenize_cuts_a_whole_text_the_same_way() -> None:
    pieces = FirstPhraseTokenizer().tokenize(SHORT_FIRST + " And then some more words here.")
    assert pieces[0] == "I hear you."
    assert " ".join(p.strip() for p in pieces) == SHORT_FIRST + " And then some more words here."
