"""What the words of a turn so far say: when its early reply may start (preemptive generation),
and how long the end-of-turn model may hold it open.

Rule: the library starts an early reply (an LLM request and, with PREEMPTIVE_TTS, the synthesis
of its first words) on every final transcript of the caller's speech. A transcript that stops
where an English sentence does not ("so", "and", "um", "I was going to say", a trailing comma)
is most often a pause to think: the caller goes on and that reply is thrown away, one more LLM
request per paused utterance (issue 22 allows 1.3 per answered turn). So such a transcript's
early reply is held until the end-of-turn model has spoken: it starts as soon as the model says
the turn ends (the turn commits `min_delay` later, so nothing is lost), or, while the model
holds the turn open, once the silence has lasted `max_delay - LEAD_SECONDS`, so that the reply
is still ready when the hold runs out. If the caller speaks again first, nothing was sent. A
transcript that sounds finished starts its early reply at once, as before, and (with
FINISHED_MAX_DELAY_SECONDS) the model may hold that turn open for a shorter time than for an
end whose words trail off: the model hears only the audio, and doubted "I see." for 2 s. Only
with the end-of-turn model (TURN_DETECTION=model): with the VAD's end of turn there is no
prediction to wait for.

The library has no public hook between a final transcript and its early reply: the hold wraps
four of the session activity's hook methods (the ones its audio recognition calls) for the
agent's lifetime, and puts them back when the agent exits.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from livekit.agents import Agent
from livekit.agents.voice.events import EotPredictionEvent

from agent.log import get_logger

if TYPE_CHECKING:
    from livekit.agents.voice.agent_activity import AgentActivity

log = get_logger(__name__)

# The provider pipeline's time from the LLM request to the first audio of its reply: the stub's
# `typical` profile (docs/performance.md) answers its first token after 0.35 s and the TTS its
# first byte after 0.25 s. A held reply starts this long before the model's hold runs out.
LEAD_SECONDS = 0.6

# Words an English utterance seldom ends on: fillers, conjunctions, articles and possessives,
# prepositions that take an object, forms of "be", and "say" ("I was going to say ..."). A
# finished sentence that ends on one ("That's all I wanted to say.") only has its early reply
# wait for the model's verdict, about 0.1 s.
_UNFINISHED_WORDS = frozenset(
    (
        *("um", "umm", "uh", "uhm", "er", "erm", "ah"),
        *("and", "but", "or", "nor", "so", "because", "cause", "cos", "if", "when", "while"),
        *("although", "though", "unless", "until", "since", "whether", "than"),
        *("which", "who", "whose", "where"),
        *("a", "an", "the", "my", "your", "our", "their"),
        *("to", "of", "for", "with", "from", "about", "into", "onto", "at", "by"),
        *("is", "are", "was", "were", "am"),
        "say",
    )
)
_TRAILING_MARK = re.compile(r"(,|;|:|-|\u2013|\u2014|\.\.\.|\u2026)$")
_WORD = re.compile(r"[a-z']+")


def sounds_unfinished(transcript: str, *, english: bool = True) -> bool:
    """True when `transcript` stops where a sentence does not: on a clause mark or an ellipsis,
    or, in English, on one of `_UNFINISHED_WORDS` (whatever punctuation the STT put after it);
    never when it ends as a question or an exclamation."""
    text = transcript.strip().lower()
    if not text or text.endswith(("?", "!")):
        return False
    if _TRAILING_MARK.search(text):
        return True
    if not english:  # the word list is English ("a" and "so" are words of other languages too)
        return False
    words = _WORD.findall(text)
    return bool(words) and words[-1].strip("'") in _UNFINISHED_WORDS


class EarlyReplyHold:
    """Holds an agent activity's early replies for unfinished-sounding transcripts (see the
    module). Built by `attach`; `close` releases nothing and puts the hooks back."""

    def __init__(
        self,
        activity: AgentActivity,
        *,
        max_delay: float,
        english: bool = True,
        finished_max_delay: float | None = None,
        set_max_delay: Callable[[float], None] | None = None,
    ) -> None:
        self._activity = activity
        self._max_delay = max_delay
        self._english = english
        # a shorter hold of the model for a transcript that sounds finished (None: off)
        self._finished_max_delay = finished_max_delay
        self._set_max_delay = set_max_delay
        self._hold_now = max_delay
        self._loop = asyncio.get_running_loop()
        self._lib_preemptive: Callable[[Any], None] = activity.on_preemptive_generation
        self._lib_eot: Callable[[EotPredictionEvent], None] = activity.on_eot_prediction
        self._lib_speech: Callable[..., None] = activity.on_start_of_speech
        self._lib_end_of_turn: Callable[[Any], bool] = activity.on_end_of_turn
        self._held: Any = None  # the library's _PreemptiveGenerationInfo
        self._prediction: EotPredictionEvent | None = None  # this silence's, if any yet
        self._timer: asyncio.TimerHandle | None = None
        self.held = 0  # early replies held
        self.released = 0  # of those, started after all
        self.dropped = 0  # of those, never sent: the caller spoke again or the turn ended
        for name in _HOOKS:
            setattr(activity, name, getattr(self, f"_{name}"))

    def close(self) -> None:
        self._drop()
        self._hold_the_turn(finished=False)
        for name in _HOOKS:
            if name in vars(self._activity):
                delattr(self._activity, name)

    # ---- the activity's hooks

    def _on_preemptive_generation(self, info: Any) -> None:
        self._drop()  # a newer transcript supersedes a held reply, as the library's own does
        unfinished = sounds_unfinished(str(info.new_transcript), english=self._english)
        # before the library re-runs its end-of-turn wait on this transcript, which reads it
        self._hold_the_turn(finished=not unfinished)
        if not unfinished:
            self._lib_preemptive(info)
            return
        self._held = info
        self.held += 1
        if self._prediction is not None:
            self._decide(self._prediction)

    def _on_eot_prediction(self, ev: EotPredictionEvent) -> None:
        self._lib_eot(ev)
        self._prediction = ev
        if self._held is not None and self._timer is None:
            self._decide(ev)

    def _on_start_of_speech(self, *args: Any, **kwargs: Any) -> None:
        self._prediction = None  # a new stretch of speech: the last verdict is about the old one
        self._drop()
        self._hold_the_turn(finished=False)
        self._lib_speech(*args, **kwargs)

    def _on_end_of_turn(self, info: Any) -> bool:
        # the library replies now (adopting an early reply if one started); a held one never will
        self._drop()
        self._prediction = None
        self._hold_the_turn(finished=False)
        return self._lib_end_of_turn(info)

    # ---- the hold

    def _hold_the_turn(self, *, finished: bool) -> None:
        """The longest the model may hold this turn open: shorter once its transcript sounds
        finished (when configured), the session's own otherwise."""
        if self._finished_max_delay is None or self._set_max_delay is None:
            return
        wanted = self._finished_max_delay if finished else self._max_delay
        if wanted != self._hold_now:
            self._hold_now = wanted
            self._set_max_delay(wanted)

    def _decide(self, prediction: EotPredictionEvent) -> None:
        if prediction.probability >= prediction.threshold:
            self._release()
            return
        # the model holds the turn open until `max_delay` after the caller's last word
        speech_ended_at = prediction.created_at - prediction.delay
        wait = speech_ended_at + self._max_delay - LEAD_SECONDS - time.time()
        if wait <= 0:
            self._release()
        else:
            self._timer = self._loop.call_later(wait, self._release)

    def _release(self) -> None:
        info, self._held, self._timer = self._held, None, None
        if info is None:
            return
        self.released += 1
        log.debug("early_reply.released", held=self.held, released=self.released)
        self._lib_preemptive(info)

    def _drop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._held is not None:
            self._held = None
            self.dropped += 1
            log.debug("early_reply.dropped", held=self.held, dropped=self.dropped)


_HOOKS = ("on_preemptive_generation", "on_eot_prediction", "on_start_of_speech", "on_end_of_turn")


def attach(
    agent: Agent, *, language: str = "en", finished_max_delay: float | None = None
) -> EarlyReplyHold | None:
    """Hold `agent`'s unfinished-sounding early replies, from its `on_enter`: None when its
    session has no early replies or no end-of-turn model to wait for. `language`: the call's
    (the scenario's, else LANGUAGE); only English transcripts are judged by their last word.
    `finished_max_delay`: the longest the model may hold a turn whose transcript sounds
    finished (FINISHED_MAX_DELAY_SECONDS; None or the session's own max delay: unchanged)."""
    session = agent.session
    options = session.options
    detector = session.turn_detection
    if not options.preemptive_generation.get("enabled", False) or detector is None:
        return None
    if isinstance(detector, str):  # "vad", "stt", "realtime_llm", "manual": no model's verdict
        return None
    max_delay = float(options.endpointing["max_delay"])
    english = language.lower() == "en" or language.lower().startswith(("en-", "en_"))
    shorter = finished_max_delay if finished_max_delay and finished_max_delay < max_delay else None

    def set_max_delay(seconds: float) -> None:
        session.update_options(endpointing_opts={"max_delay": seconds})

    return EarlyReplyHold(
        agent._get_activity_or_raise(),
        max_delay=max_delay,
        english=english,
        finished_max_delay=shorter,
        set_max_delay=set_max_delay,
    )
