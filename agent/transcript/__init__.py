"""The call's transcript: turns from session events and their live publishing.

Rule: a turn is journaled (the recorder's sink) before it is published, and a failed publish
never breaks the call or the transcript. One module per part:

- `turns`: `TurnRecorder`, session events -> `Turn`s with `seq`, interruptions, latencies
- `publisher`: `TranscriptPublisher`, one FIFO task per call on the data channel, then `end`
- `packets`: a turn's packets, split to stay within MAX_PACKET_BYTES
- `usage`: the transcript's `usage` entries from the session's model usage
"""

from agent.transcript.packets import turn_packets
from agent.transcript.publisher import DataSink, TranscriptPublisher, room_data_sink
from agent.transcript.turns import TurnRecorder
from agent.transcript.usage import merge_usage, usage_from_model_usage, usage_from_session

__all__ = [
    "DataSink",
    "TranscriptPublisher",
    "TurnRecorder",
    "merge_usage",
    "room_data_sink",
    "turn_packets",
    "usage_from_model_usage",
    "usage_from_session",
]
