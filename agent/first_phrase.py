"""The reply's first words go to the TTS as soon as they make a phrase, not a whole sentence.

Rule: the text sent to the TTS is exactly the reply's text, cut differently: the first chunk
ends at the first clause mark (. ! ? , ; : or a dash) after at least `MIN_WORDS` words, or after
`MAX_WORDS` words when no mark comes; everything after it is cut into sentences by the library's
own tokenizer (blingfire, 20 characters at least), as before. The OpenAI TTS is not a streaming
one: the library synthesises chunk after chunk, and waited for the whole first sentence (and
merged a sentence under 20 characters, "I hear you.", into the next) before the first request.
"""

from __future__ import annotations

import asyncio
import re

from livekit.agents import tokenize, utils
from livekit.agents.tokenize.tokenizer import SentenceStream, SentenceTokenizer, TokenData

# a first chunk of one or two words sounds clipped; eight words at 50 tokens/s cost ~0.2 s
MIN_WORDS = 2
MAX_WORDS = 8

# a word, then the clause mark that ends it (the mark may be followed by a closing quote)
_CLAUSE_END = re.compile(r"[.!?,;:\u2014\u2013][\"'\u201d\u2019)]*$")


def first_phrase_end(text: str) -> int | None:
    """Where the first chunk of `text` ends (an index into it), or None while it may grow.
    Only whole words count: a word is whole once whitespace follows it."""
    for words, match in enumerate(re.finditer(r"\S+(?=\s)", text), start=1):
        if (words >= MIN_WORDS and _CLAUSE_END.search(match.group())) or words >= MAX_WORDS:
            return match.end()
    return None


class FirstPhraseTokenizer(SentenceTokenizer):
    """A sentence tokenizer whose stream sends the first phrase on its own (see the module)."""

    def __init__(self) -> None:
        self._sentences = tokenize.blingfire.SentenceTokenizer(retain_format=True)

    def tokenize(self, text: str, *, language: str | None = None) -> list[str]:
        end = first_phrase_end(text)
        if end is None:
            return self._sentences.tokenize(text, language=language)
        rest = self._sentences.tokenize(text[end:], language=language)
        return [text[:end], *rest]

    def stream(self, *, language: str | None = None) -> SentenceStream:
        return _FirstPhraseStream(self._sentences.stream(language=language))


class _FirstPhraseStream(SentenceStream):
    """Holds text until the first phrase is complete and emits it; from then on the library's
    sentence stream gets the text and its sentences are relayed in order."""

    def __init__(self, sentences: SentenceStream) -> None:
        super().__init__()
        self._sentences = sentences
        self._held: str | None = ""  # None once the first phrase went out
        self._segment_id = utils.shortuuid()
        self._relay = asyncio.create_task(self._relay_sentences(), name="first_phrase.relay")

    def push_text(self, text: str) -> None:
        self._check_not_closed()
        if self._held is None:
            self._sentences.push_text(text)
            return
        self._held += text
        end = first_phrase_end(self._held)
        if end is not None:
            self._release(end)

    def flush(self) -> None:
        self._check_not_closed()
        if self._held:  # a flush before any text keeps the first phrase to come
            self._release(len(self._held))
        self._sentences.flush()

    def end_input(self) -> None:
        self.flush()
        self._sentences.end_input()

    async def aclose(self) -> None:
        await self._sentences.aclose()
        await utils.aio.cancel_and_wait(self._relay)
        self._do_close()

    def _release(self, end: int) -> None:
        held, self._held = self._held or "", None
        if held[:end].strip():
            self._event_ch.send_nowait(TokenData(segment_id=self._segment_id, token=held[:end]))
        if held[end:]:
            self._sentences.push_text(held[end:])

    async def _relay_sentences(self) -> None:
        try:
            async for data in self._sentences:
                self._event_ch.send_nowait(data)
        finally:
            self._do_close()
