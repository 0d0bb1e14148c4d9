// The playground page: the living example of the README's front-end contract.
// - the agent is the participant of kind AGENT whose `lk.agent.name` is the dispatched name;
//   `transcript` packets from anyone else are ignored (any participant can publish on a topic)
// - `turn` packets are final turns: keyed and ordered by `seq` (1..n), a long turn comes in
//   `parts` that are joined in `part` order; a hole in the seqs is shown as a gap
// - `end` says how many turns there were; it may never come (the agent's process died, the
//   room closed first): the page does not wait for it to call the call over
// - an agent that leaves without `end` may come back: its container died and LiveKit Cloud (or
//   `python -m agent watch`) dispatched the call again; the new agent says a resume line and
//   its turns continue the seq. The page waits AGENT_RETURN_MS for it before the call is over
// - hang-up is the RPC `agent.end_call` to the agent; the answer is "ok"
// - after the call the page asks the playground's server for what was delivered: the transcript
//   (first) and, when the call was dispatched with `record: true`, the recording (a few seconds
//   later: it is uploaded after the transcript); each wait is bounded
"use strict";

const LK = window.LivekitClient;
const TRANSCRIPT_TOPIC = "transcript";
const TRANSCRIPTION_TOPIC = "lk.transcription";
const AGENT_NAME_ATTRIBUTE = "lk.agent.name";
const AGENT_STATE_ATTRIBUTE = "lk.agent.state";
const END_CALL_METHOD = "agent.end_call";
// LiveKit Cloud re-dispatches within seconds; the watcher after WATCH_GRACE_SECONDS (10) plus
// its interval (5) plus a worker's start: 30 s covers both with room to spare.
const AGENT_RETURN_MS = 30000;
// The agent's leave (signal) can overtake its last data packets (`end`, relayed over the data
// channel): stay in the room this long for them before disconnecting.
const END_LINGER_MS = 2000;
// How long the page waits for a delivery after the call (transcript, recording), asking every
// POLL_MS: the recording is uploaded after the transcript, a few seconds after the call's end.
const DELIVERY_WAIT_MS = 30000;
const POLL_MS = 1000;

const $ = (id) => document.getElementById(id);

// What a test (or a curious developer) can read: window.playground
const state = {
  room: null,
  grant: null,
  agentIdentity: null,
  sessionId: null,
  turns: new Map(), // seq -> {seq, role, text, interrupted, startedAt, endedAt}
  parts: new Map(), // seq -> Map(part -> text), while a split turn is incomplete
  gaps: [],
  end: null,
  agentLeft: false,
  agentAway: null, // a timer while the agent is gone without `end` (it may come back)
  agentChanges: 0, // agents that came back after one left without `end`
  agentChangedAtSeq: 0, // the last seq the page held when the latest one came back
  hangingUp: false, // the hang-up button was pressed (the agent's leave may beat the answer)
  agentGoneAt: null, // when the agent left (Date.now()); null while one is in the room
  hangup: null, // the RPC's answer or error
  agentAudioSeconds: 0, // seconds of audible agent audio (an analyser on the remote track)
  delivered: null,
  record: false, // the call was dispatched with `record: true` (the box was ticked)
  afterCallFor: null, // the session whose deliveries the page asked for
  recording: null, // the delivered recording: {where, parts: [{url, bytes}]}
  rejected: 0, // transcript packets from non-agents, ignored
};
window.playground = state;

function show(id, text) {
  $(id).textContent = text;
}

function error(text) {
  show("error", text);
}

function isAgent(participant) {
  return (
    !!participant &&
    participant.kind === LK.ParticipantKind.AGENT &&
    participant.attributes[AGENT_NAME_ATTRIBUTE] === state.grant.agentName
  );
}

async function loadScenarios() {
  const answer = await (await fetch("/api/scenarios")).json();
  const select = $("scenario");
  if (answer.source === "backend") {
    select.hidden = true;
    $("scenario-id").hidden = false;
    return;
  }
  for (const id of answer.scenarios) {
    const option = document.createElement("option");
    option.value = option.textContent = id;
    select.appendChild(option);
  }
}

function scenarioId() {
  return $("scenario").hidden ? $("scenario-id").value.trim() : $("scenario").value;
}

// ------------------------------------------------------------------ turns
function onTranscriptPacket(message) {
  if (message.v !== 1) return; // a future version: ignore what we do not understand
  if (message.type === "interim") {
    show("caption-user", message.text);
  } else if (message.type === "turn") {
    state.sessionId = message.sessionId;
    const whole = joinParts(message);
    if (whole) addTurn(whole);
  } else if (message.type === "end") {
    state.sessionId = message.sessionId;
    state.end = message;
    updateGaps();
    show("end", `end: ${message.turnCount} turns`);
    afterCall();
  }
}

function joinParts(message) {
  if (!message.parts) return message;
  const held = state.parts.get(message.seq) || new Map();
  held.set(message.part, message.text);
  state.parts.set(message.seq, held);
  if (held.size < message.parts) return null;
  state.parts.delete(message.seq);
  const text = [...held.keys()].sort((a, b) => a - b).map((k) => held.get(k)).join("");
  const { part, parts, ...rest } = message;
  return { ...rest, text };
}

function addTurn(turn) {
  if (state.turns.has(turn.seq)) return; // a duplicate: the first copy wins
  state.turns.set(turn.seq, turn);
  if (turn.role === "user") show("caption-user", "");
  updateGaps();
  renderTurns();
}

function updateGaps() {
  const seqs = [...state.turns.keys()];
  const last = Math.max(0, ...seqs, state.end ? state.end.turnCount : 0);
  state.gaps = [];
  for (let seq = 1; seq <= last; seq++) if (!state.turns.has(seq)) state.gaps.push(seq);
  show("gaps", state.gaps.length ? `missing seq: ${state.gaps.join(", ")}` : "");
}

function turnItem(turn) {
  const li = document.createElement("li");
  li.value = turn.seq;
  li.dataset.seq = turn.seq;
  const role = document.createElement("span");
  role.className = `role ${turn.role}`;
  role.textContent = turn.role;
  li.appendChild(role);
  li.appendChild(document.createTextNode(turn.text));
  if (turn.interrupted) {
    const mark = document.createElement("span");
    mark.className = "interrupted";
    mark.textContent = " (interrupted)";
    li.appendChild(mark);
  }
  return li;
}

function renderTurns() {
  const list = $("turns");
  list.replaceChildren(
    ...[...state.turns.values()].sort((a, b) => a.seq - b.seq).map(turnItem),
  );
}

// ------------------------------------------------------------------ after the call
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Once per session, after `end` (or when the call is over without it): what was delivered.
function afterCall() {
  const sessionId = state.sessionId;
  if (!sessionId || state.afterCallFor === sessionId) return;
  state.afterCallFor = sessionId;
  fetchDelivered(sessionId);
  fetchRecording(sessionId);
}

// ------------------------------------------------------------------ the delivered transcript
async function fetchDelivered(sessionId) {
  show("delivered-status", "waiting for the delivery...");
  for (let attempt = 0; attempt < DELIVERY_WAIT_MS / POLL_MS; attempt++) {
    if (state.sessionId !== sessionId) return; // another call began
    const response = await fetch(`/api/transcript/${encodeURIComponent(sessionId)}`);
    const answer = await response.json();
    if (state.sessionId !== sessionId) return;
    if (response.ok) {
      state.delivered = answer.transcript;
      const body = answer.transcript;
      show(
        "delivered-status",
        `delivered (${answer.where}): ${body.turnCount} turns, endedReason ${body.endedReason}`,
      );
      $("delivered").replaceChildren(...body.turns.map(turnItem));
      return;
    }
    if (answer.where === "backend") {
      show("delivered-status", answer.error);
      return;
    }
    await sleep(POLL_MS);
  }
  show("delivered-status", "not delivered within 30 s (see the worker's log and the journal)");
}

// ------------------------------------------------------------------ the delivered recording
// The server lists the parts the embedded local backend holds (a resumed call has one per run,
// in order) and serves each as audio/ogg; with BACKEND_URL they went to the backend (a 404 that
// says so). A call not dispatched with `record: true` is asked about once, not waited for.
async function fetchRecording(sessionId) {
  const asked = state.record;
  const stale = () => state.sessionId !== sessionId;
  const waiting = "waiting for the recording (uploaded after the transcript)...";
  show("recording-status", asked ? waiting : "-");
  const tries = asked ? DELIVERY_WAIT_MS / POLL_MS : 1;
  for (let attempt = 0; attempt < tries; attempt++) {
    if (attempt > 0) await sleep(POLL_MS);
    if (stale()) return;
    let response;
    let answer;
    try {
      response = await fetch(`/api/recording/${encodeURIComponent(sessionId)}`);
      answer = await response.json();
    } catch (e) {
      continue; // the playground restarting: ask again
    }
    if (stale()) return;
    if (response.ok) {
      state.recording = answer;
      showRecording(answer.parts);
      return;
    }
    if (answer.where === "backend" || response.status === 400) {
      show("recording-status", answer.error);
      return;
    }
  }
  show(
    "recording-status",
    asked
      ? `not delivered within ${DELIVERY_WAIT_MS / 1000} s: not recorded after all, or the ` +
          "upload is late or failed (see the worker's recording.* log lines and the journal)"
      : 'not recorded: "Record this call" was off (job metadata record: false)',
  );
}

function showRecording(parts) {
  const kib = Math.round(parts.reduce((sum, part) => sum + part.bytes, 0) / 1024);
  show(
    "recording-status",
    `delivered (local): ${parts.length} part${parts.length > 1 ? "s" : ""}, ${kib} KiB`,
  );
  $("recording").replaceChildren(
    ...parts.map((part, index) => {
      const item = document.createElement("div");
      if (parts.length > 1) item.appendChild(document.createTextNode(`part ${index + 1}`));
      const audio = document.createElement("audio");
      audio.controls = true;
      audio.preload = "metadata";
      audio.src = part.url;
      item.appendChild(audio);
      return item;
    }),
  );
}

// ------------------------------------------------------------------ the agent's audio
function listen(track) {
  const element = track.attach();
  $("audio").appendChild(element);
  // measure what is heard, so that "the greeting was heard" can be checked
  const context = new AudioContext();
  const source = context.createMediaStreamSource(new MediaStream([track.mediaStreamTrack]));
  const analyser = context.createAnalyser();
  analyser.fftSize = 2048;
  source.connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  const tick = 0.1;
  setInterval(() => {
    analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const s of samples) sum += s * s;
    if (Math.sqrt(sum / samples.length) > 0.01) state.agentAudioSeconds += tick;
  }, tick * 1000);
}

// ------------------------------------------------------------------ the call
function reset() {
  Object.assign(state, {
    agentIdentity: null,
    sessionId: null,
    turns: new Map(),
    parts: new Map(),
    gaps: [],
    end: null,
    agentLeft: false,
    agentAway: null,
    agentChanges: 0,
    agentChangedAtSeq: 0,
    hangingUp: false,
    agentGoneAt: null,
    hangup: null,
    agentAudioSeconds: 0,
    delivered: null,
    record: false,
    afterCallFor: null,
    recording: null,
    rejected: 0,
  });
  for (const id of ["turns", "delivered", "audio", "recording"]) $(id).replaceChildren();
  for (const id of ["gaps", "end", "caption-user", "caption-agent"]) show(id, "");
  show("delivered-status", "after the call");
  show("recording-status", "after the call");
  show("agent-state", "-");
}

async function call() {
  error("");
  reset();
  $("call").disabled = true;
  state.record = $("record").checked;
  const response = await fetch("/api/call", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ scenarioId: scenarioId(), record: state.record }),
  });
  const grant = await response.json();
  if (!response.ok) {
    error(grant.error || `call failed (${response.status})`);
    $("call").disabled = false;
    return;
  }
  state.grant = grant;
  show("room", grant.room);
  const room = new LK.Room();
  state.room = room;

  room.on(LK.RoomEvent.ConnectionStateChanged, (s) => show("connection", s));
  room.on(LK.RoomEvent.TrackSubscribed, (track, _publication, participant) => {
    if (track.kind === LK.Track.Kind.Audio && isAgent(participant)) listen(track);
  });
  const agentSeen = (participant) => {
    if (!isAgent(participant)) return;
    if (state.agentAway !== null) {
      // the call resumed on another worker: same room, same session, seq continues
      clearTimeout(state.agentAway);
      state.agentAway = null;
      state.agentChanges += 1;
      state.agentChangedAtSeq = Math.max(0, ...state.turns.keys());
    }
    state.agentIdentity = participant.identity;
    state.agentGoneAt = null;
    show("agent-state", participant.attributes[AGENT_STATE_ATTRIBUTE] || "joining");
    $("hangup").disabled = false;
  };
  room.on(LK.RoomEvent.ParticipantConnected, agentSeen);
  room.on(LK.RoomEvent.ParticipantAttributesChanged, (_changed, participant) => {
    if (!state.agentIdentity) agentSeen(participant);
    if (isAgent(participant)) {
      show("agent-state", participant.attributes[AGENT_STATE_ATTRIBUTE] || "joining");
    }
  });
  const callOver = () => {
    state.agentAway = null;
    state.agentLeft = true;
    show("agent-state", "left");
    $("hangup").disabled = true;
    $("mute").disabled = true;
    $("call").disabled = false; // another call: a fresh room
    const leave = () => {
      room.disconnect();
      if (!state.end) afterCall(); // `end` may never come: the call is over anyway
    };
    if (state.end) leave();
    else setTimeout(leave, END_LINGER_MS);
  };
  room.on(LK.RoomEvent.ParticipantDisconnected, (participant) => {
    if (participant.identity !== state.agentIdentity) return;
    state.agentGoneAt = Date.now();
    if (state.end || state.hangingUp) {
      callOver(); // the agent ended the call (or we hung up): it is not coming back
      return;
    }
    // gone without `end`: its worker may have died; stay in the room for a resumed agent
    show("agent-state", "away (waiting for the call to resume)");
    $("hangup").disabled = true;
    state.agentAway = setTimeout(callOver, AGENT_RETURN_MS);
  });
  room.on(LK.RoomEvent.DataReceived, (payload, participant, _kind, topic, _encryption, from) => {
    if (topic !== TRANSCRIPT_TOPIC) return;
    // Packets the agent sent just before it left (its last turns, `end`) can arrive after its
    // leave: the SDK then gives no participant, only the sender's identity (`from`). Take them
    // when that is the agent that just left; anyone in the room is checked as usual.
    const late = !participant && state.agentGoneAt !== null && from === state.agentIdentity;
    if (!late && !isAgent(participant)) {
      state.rejected += 1;
      return;
    }
    try {
      onTranscriptPacket(JSON.parse(new TextDecoder().decode(payload)));
    } catch (e) {
      console.warn("undecodable transcript packet", e);
    }
  });
  // LiveKit's own transcription streams: live captions of both sides (not the record)
  room.registerTextStreamHandler(TRANSCRIPTION_TOPIC, async (reader, participantInfo) => {
    const fromAgent = participantInfo.identity === state.agentIdentity;
    const target = fromAgent ? "caption-agent" : "caption-user";
    let text = "";
    for await (const chunk of reader) {
      text += chunk;
      show(target, text);
    }
  });

  try {
    await room.connect(grant.url, grant.token);
    await room.localParticipant.setMicrophoneEnabled(true);
    await room.startAudio();
  } catch (e) {
    error(`could not join: ${e.message || e}`);
    $("call").disabled = false;
    return;
  }
  for (const participant of room.remoteParticipants.values()) agentSeen(participant);
  $("mute").disabled = false;
}

async function toggleMute() {
  const local = state.room.localParticipant;
  const muted = local.isMicrophoneEnabled;
  await local.setMicrophoneEnabled(!muted);
  show("mute", muted ? "Unmute" : "Mute");
}

async function hangUp() {
  $("hangup").disabled = true;
  state.hangingUp = true;
  try {
    const answer = await state.room.localParticipant.performRpc({
      destinationIdentity: state.agentIdentity,
      method: END_CALL_METHOD,
      payload: "{}",
      responseTimeout: 10000,
    });
    state.hangup = { answer };
  } catch (e) {
    // LK.RpcError: code 403 (not the linked participant), 500 (failed), 1xxx (the library's)
    state.hangup = { code: e.code, message: e.message };
    // 1503: the agent left before its answer reached us; it was hanging up: the call is over
    if (e.code === 1503) return;
    state.hangingUp = false;
    error(`hang-up refused: ${e.code} ${e.message}`);
    $("hangup").disabled = false;
  }
}

$("call").addEventListener("click", call);
$("mute").addEventListener("click", toggleMute);
$("hangup").addEventListener("click", hangUp);
loadScenarios().catch((e) => error(`no scenarios: ${e}`));
