"""One call, from job start to delivered transcript, in the order it happens.

Rule: the call's lifecycle lives here and nowhere else, one module per step, read top to bottom:

- `state`: the `Call`, the one object holding a call's state, its tasks and why it ended
- `start`: 1. validate the job metadata; 2. scenario, session and room connection in one gather
- `session`: 3. journal the call and run the persona's session with the transcript wired in
- `ending`: 4. how it ends: hang-up RPC, no-show and max-duration timers (and the session's
  close, `Call.on_session_close`)
- `finish`: 5. flush the turns, build the transcript, journal -> delivery -> `call.ended`
- `recover`: 6. deliver what earlier calls left undelivered

`agent.worker` calls these in that order. Event handlers call into the `Call`; the `Call` calls
no handler, and no step calls back into the one that called it.
"""

from agent.call.state import CALL_KEY, Call

__all__ = ["CALL_KEY", "Call"]
