"""How long a closing session waits for the caller's last words (DESIGN.md, "When a call ends").

Rule: the close waits up to the configured bound only while user words are in flight (the
caller is speaking, interim words have no final yet, or the speech ended before its final
transcript came); with nothing in flight it waits for nothing, so a hang-up or a caller leaving
ends the call at once.

Why here: the library reads `session_close_transcript_timeout` when it closes and, unless a
final transcript arrived in the last 0.5 s, always waits that long for one. A batch STT sends
nothing when nobody spoke, so every close used to wait the whole bound. The session's public
events tell us whether words are in flight; we keep the option at the bound or at zero to
match, and the close reads whichever is current.
"""

from __future__ import annotations

import asyncio
from typing import Any

from livekit.agents import AgentSession
from livekit.agents.voice.events import UserInputTranscribedEvent, UserStateChangedEvent

NOTHING_IN_FLIGHT = 0.0


class CloseWait:
    """Keeps `session.options.session_close_transcript_timeout` at `bound` while user words are
    in flight, at zero otherwise. Speech that never yields a transcript (noise the STT returns
    empty) stops counting as in flight `bound` seconds after it ended: waiting longer at the
    close would not bring it back."""

    def __init__(self, session: AgentSession[Any], bound: float) -> None:
        self._session = session
        self._bound = bound
        self._speaking = False
        self._pending = False  # words spoken whose final transcript has not come yet
        # what the STT said since the caller began speaking: a streaming STT often sends the
        # final before the VAD calls the speech over; a batch STT only after
        self._final_since_speech = False
        self._interim_open = False  # interim words not yet closed by a final
        self._expiry: asyncio.TimerHandle | None = None
        session.on("user_state_changed", self._on_user_state)
        session.on("user_input_transcribed", self._on_transcribed)
        self._apply()

    @property
    def in_flight(self) -> bool:
        return self._speaking or self._pending

    def _on_user_state(self, event: UserStateChangedEvent) -> None:
        if event.new_state == "speaking":
            self._speaking = True
            self._final_since_speech = False
            self._cancel_expiry()
        elif self._speaking:
            self._speaking = False
            # the speech ended: in flight unless its final transcript already came (a batch
            # STT starts transcribing only now)
            self._pending = self._interim_open or not self._final_since_speech
            if self._pending:
                self._expire_later()
        self._apply()

    def _on_transcribed(self, event: UserInputTranscribedEvent) -> None:
        if event.is_final:
            self._final_since_speech = True
            self._interim_open = False
            self._pending = False
            self._cancel_expiry()
        else:
            self._interim_open = True
            self._pending = True
            if not self._speaking:
                self._expire_later()
        self._apply()

    def _expire_later(self) -> None:
        self._cancel_expiry()
        # the library emits session events on its loop
        self._expiry = asyncio.get_running_loop().call_later(self._bound, self._expire)

    def _expire(self) -> None:
        self._expiry = None
        self._pending = False
        self._apply()

    def _cancel_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    def _apply(self) -> None:
        self._session.options.session_close_transcript_timeout = (
            self._bound if self.in_flight else NOTHING_IN_FLIGHT
        )


def wait_only_for_words_in_flight(session: AgentSession[Any], bound: float) -> CloseWait:
    """Make the session's close wait up to `bound` for a last transcript only while the
    caller's words are in flight. The returned tracker lives as long as the session (the
    session's event handlers hold it)."""
    return CloseWait(session, bound)
