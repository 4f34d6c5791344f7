// The browser radar: lists streams and recordings and plays one on a top-down canvas.
// Protocol: docs/protocol.md. Plain ES modules, no build step; msgpack is the vendored
// @msgpack/msgpack (server/static/vendor/README.md). This module wires the others together.
import { FrameBuffer, LiveClock, ReplayClock, nowS } from "./clock.js";
import { EventsIndex, roundTarget } from "./events.js";
import { bindKeys } from "./keyboard.js";
import { MapView } from "./maptransform.js";
import { Server } from "./net.js";
import { Panels } from "./panels.js";
import { StreamClient, canInflate } from "./protocol.js";
import { Renderer } from "./render.js";
import { Timeline } from "./timeline.js";
import { Utility } from "./utility.js";

const SPEEDS = [0.25, 0.5, 1, 1.25, 1.5, 2, 4, 8];
const LIVE_BUFFER_SECONDS = 1;
const FOLLOW_ZOOM = 2;
const STALE_POLL_MS = 3000;
const HISTORY_SECONDS = 20; // fetched before a seek's target: smokes and fires still burning

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
if (params.get("server")) $("server-url").value = params.get("server");
const server = new Server(location.origin, params.get("token") || "");
const wantDeflate = canInflate && params.get("encoding") !== "plain";

const map = new MapView();
const renderer = new Renderer($("radar"), map);
const panels = new Panels(document, (name) => follow(name));
const timeline = new Timeline($("timeline"), (tick) => seek(tick));

let session = null; // the stream or recording being played
let connState = "idle";
let framesReceived = 0;
let shown = null; // the {a, b, f} on screen
let drawn = []; // players on screen (interpolated)
let followed = null;
let levelChoice = "auto";
let loadedMap = null; // "<server> <map>" whose backdrop is loaded
let mapRequest = null; // while /maps/<map> is on its way, no transform of our own is fitted

function setConn(state, detail = "") {
  connState = state;
  $("conn").dataset.state = state;
  $("conn").textContent = detail ? `${state}: ${detail}` : state;
}

function useServerField() {
  server.base = $("server-url").value.trim().replace(/\/+$/, "") || location.origin;
}

// -- catalog ---------------------------------------------------------------------------------

function button(text, kind, id) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  b.dataset.kind = kind;
  b.dataset.id = id;
  b.addEventListener("click", () => connect(kind, id));
  return b;
}

async function listAll() {
  useServerField();
  const errors = [];
  try {
    const streams = await server.streams();
    $("streams").replaceChildren(...streams.map((s) => {
      const li = document.createElement("li");
      const stale = s.stale ? ", stale" : "";
      li.append(button(`${s.id} (${s.map}, ${s.subscribers} watching${stale})`, "live", s.id));
      if (s.source === "gsi") li.append(button("DVR", "replay", s.id)); // replay while live
      return li;
    }));
  } catch (err) {
    errors.push(err.message);
  }
  try {
    const { recordings } = await server.json("/recordings");
    $("recordings").replaceChildren(...recordings.map((r) => {
      const li = document.createElement("li");
      li.append(button(`${r.id} (${Math.round(r.duration_s)} s)`, "replay", r.id));
      return li;
    }));
  } catch (err) {
    errors.push(err.message);
  }
  $("list-error").textContent = errors.join("; ");
}

// -- connection ------------------------------------------------------------------------------

function connect(kind, id) {
  disconnect();
  const s = {
    kind, id, buffer: new FrameBuffer(), utility: new Utility(), events: new EventsIndex(),
    clock: kind === "live" ? new LiveClock() : new ReplayClock(), tickrate: 64, rate: 64,
    epoch: null, gen: 0, lastSeq: -1, first: 0, last: 0, rounds: [], roster: [], ended: false,
    live: false, liveEdge: undefined, stale: false,
  };
  session = s;
  shown = null;
  drawn = [];
  renderer.reset();
  for (const b of document.querySelectorAll("nav button")) {
    b.classList.toggle("active", b.dataset.kind === kind && b.dataset.id === id);
  }
  $("replay-controls").hidden = kind !== "replay";
  useServerField();
  const query = wantDeflate ? { encoding: "deflate" } : {};
  s.client = new StreamClient(server.wsUrl(`/${kind}/${encodeURIComponent(id)}`, query), {
    onMessage: (msg) => s === session && onMessage(s, msg),
    onState: (state, detail) => s === session && setConn(state, detail),
    reconnect: kind === "live",
  });
  s.client.open();
  if (kind === "replay") loadEvents(s);
  s.poll = setInterval(() => pollStale(s), STALE_POLL_MS);
}

async function loadEvents(s) {
  const events = await EventsIndex.load(server, s.id);
  if (s === session && (events.fromServer || !s.events.events.length)) s.events = events;
}

function disconnect() {
  if (!session) return;
  session.client.close();
  clearInterval(session.poll);
  session = null;
  setConn("idle");
}

const send = (message) => session?.client.send(message);

function onMessage(s, msg) {
  switch (msg.type) {
    case "hello": return onHello(s, msg);
    case "ticks": return onTicks(s, msg);
    case "state": return onState(s, msg);
    case "subscribed": return setConn("open", `buffer ${msg.buffer}`);
    case "skip": return onSkip(s, msg);
    case "stale": return setStale(s, msg.stale);
    case "end": s.ended = true; return setConn("open", "end of stream");
    case "error": return setConn(connState, `error ${msg.code}: ${msg.message}`);
    default: return undefined;
  }
}

function onHello(s, msg) {
  const info = msg.stream;
  s.tickrate = info.tickrate;
  s.first = info.first_tick;
  s.last = info.last_tick;
  s.roster = msg.roster || [];
  s.clock.tickrate = info.tickrate;
  setConn("open");
  loadMap(info.map);
  if (s.kind === "live") {
    s.rate = info.rate;
    s.clock.rate = info.rate;
    s.clock.offset = msg.server_time - nowS();
    if (s.epoch !== null && s.epoch !== info.epoch) resetTimeline(s); // restarted: seqs start over
    s.epoch = info.epoch;
    s.clock.epoch = info.epoch;
    const buffer = Math.min(msg.max_buffer, Math.round(LIVE_BUFFER_SECONDS * s.rate));
    const resume = s.lastSeq >= 0 ? { resume_seq: s.lastSeq + 1 } : {};
    send({ type: "subscribe", buffer, ...resume });
  } else {
    s.rate = info.tickrate;
    s.live = Boolean(msg.live);
    s.rounds = (msg.rounds || []).map((r) => r.tick);
    $("go-live").hidden = !s.live;
    send({ type: "speed", value: Number($("speed").value) }); // state + first frame follow hello
  }
}

async function loadMap(mapName) {
  const key = `${server.base} ${mapName}`;
  if (key === loadedMap) return;
  loadedMap = key;
  Object.assign(map, new MapView()); // forget the old map's transform and images
  mapRequest = map.load(server, mapName);
  await mapRequest;
  mapRequest = null;
  const levels = map.levels;
  $("level-switch").hidden = levels.length < 2;
  $("level").replaceChildren(new Option("auto (height)", "auto"), ...levels.map((lv) => new Option(lv.name, lv.name)));
  levelChoice = "auto";
}

function onState(s, msg) {
  if (msg.gen !== s.gen) {
    resetGeneration(s, msg.gen);
    s.pendingSeeks = Math.max(0, (s.pendingSeeks || 0) - 1); // a seek (or step) answered
    fetchHistory(s, msg.tick);
  }
  s.clock.anchor(msg.tick, msg.state === "playing", msg.speed);
  s.ended = msg.state === "ended";
  if (msg.last_tick !== undefined) s.last = msg.last_tick;
  if (msg.live_edge !== undefined) s.liveEdge = msg.live_edge;
  $("play").textContent = s.clock.playing ? "pause" : "play";
  $("go-live").dataset.edge = String(Boolean(s.liveEdge));
}

/** After a jump, the frames just before it: utility thrown earlier is still on the map. */
function fetchHistory(s, tick) {
  if (tick <= s.first) return;
  const from = Math.max(s.first, Math.round(tick - HISTORY_SECONDS * s.tickrate));
  send({ type: "fetch", id: s.gen, from_tick: from, to_tick: tick - 1, credit: Math.ceil((tick - from) * 1.1) + 16 });
}

function resetGeneration(s, gen) {
  s.gen = gen;
  s.buffer.clear();
  s.utility.reset();
}

/** A new live epoch: frames and the picture of the old timeline mean nothing now. */
function resetTimeline(s) {
  resetGeneration(s, s.gen);
  s.lastSeq = -1;
  shown = null;
  renderer.reset();
}

/** Moved to the live edge at ``to_seq``: buffered frames from there on are from an abandoned
 * position (resume_unknown) and would make the next frames look like duplicates. */
function onSkip(s, msg) {
  s.buffer.dropFrom(msg.to_seq);
  s.lastSeq = msg.to_seq - 1;
  setConn("open", `skipped ${msg.skipped ?? "?"} (${msg.reason})`);
}

function onTicks(s, msg) {
  if (msg.fetch !== undefined) { // history before a seek (fetchHistory)
    if (msg.fetch === s.gen) for (const frame of msg.frames) s.utility.observeHistory(frame.tick, frame);
    return;
  }
  let anchored = true; // the playback position is known for these frames
  if (s.kind === "replay") {
    if (msg.gen < s.gen) return; // sent before a seek: stale
    if (msg.gen > s.gen) {
      resetGeneration(s, msg.gen);
      anchored = false; // its state has not arrived yet
    }
  }
  msg.frames.forEach((frame, i) => {
    const seq = msg.seq + i;
    const key = s.kind === "live" ? seq : frame.tick;
    if (!s.buffer.push(key, frame)) return; // duplicate
    s.lastSeq = seq;
    framesReceived++;
    s.utility.observe(key, frame);
    s.events.observeFrame(frame);
    if (s.live && frame.tick > s.last) s.last = frame.tick; // a live match grows
  });
  const keyRate = keyPerSecond(s);
  if (anchored) s.buffer.dropBefore(s.clock.position() - keyRate);
  const oldest = s.buffer.frames[0]?.key ?? 0;
  s.utility.prune(oldest, keyRate);
}

function setStale(s, stale) {
  s.stale = Boolean(stale);
  $("stale").hidden = !s.stale;
}

async function pollStale(s) {
  try {
    const entry = (await server.streams()).find((e) => e.id === s.id);
    if (s === session && entry && entry.stale !== undefined) setStale(s, entry.stale);
  } catch {
    // the connection state already says what is wrong
  }
}

/** Frame keys per second of playback: seqs on a live stream, ticks on a recording. */
const keyPerSecond = (s) => (s.kind === "live" ? s.rate : s.tickrate);

// -- the picture -----------------------------------------------------------------------------

function follow(name) {
  followed = name;
  $("following").textContent = name ? `following ${name} (click again to stop)` : "";
}

function frameLoop() {
  const s = session;
  const picked = s ? s.buffer.pick(s.clock.position()) : null;
  if (s && picked) {
    const pos = s.clock.position();
    if (!map.ready && mapRequest === null) map.fit(picked.a.frame.players || []);
    placeView(picked);
    if (map.ready) {
      drawn = renderer.draw({ picked, pos, keyRate: keyPerSecond(s), utility: s.utility, followed });
      shown = picked;
      updatePanels(s, picked.a.frame);
    }
  } else if (map.ready || !s) {
    renderer.drawEmpty();
  }
  if (s?.kind === "replay") {
    timeline.setRange(s.first, s.last);
    timeline.draw({
      tick: shown ? shown.a.frame.tick : s.clock.tick, rounds: s.events.roundStarts(s.rounds),
      markers: s.events.markers, liveEdge: s.live ? Boolean(s.liveEdge) : undefined,
    });
  }
  requestAnimationFrame(frameLoop);
}

/** Level and view: the followed player's level and a zoom on them, else the whole map. */
function placeView(picked) {
  const players = picked.a.frame.players || [];
  const target = followed && players.find((p) => p.name === followed);
  if (!map.ready) return;
  if (levelChoice === "auto") map.level = map.levelOf(target ? target.z ?? 0 : Infinity) ?? map.level;
  else map.level = levelChoice;
  const mover = target && drawn.find((p) => p.name === followed);
  map.follow(mover ? map.toRadar(mover.x, mover.y) : null, FOLLOW_ZOOM);
}

let lastPanels = 0;
function updatePanels(s, frame) {
  if (performance.now() - lastPanels < 100) return;
  lastPanels = performance.now();
  const rounds = s.events.roundStarts(s.rounds);
  panels.update({
    frame, players: frame.players || [], roster: s.roster, followed,
    feed: s.events.killFeed(frame.tick, rounds), score: s.events.scoreAt(frame.tick),
    label: `${s.kind} ${s.id}`,
  });
  $("map-label").textContent = map.label;
}

// -- controls --------------------------------------------------------------------------------

/** Where playback is, or where it is going: keys pressed quickly add up (-5 s twice is
 * -10 s even before the first seek is answered). */
function currentTick() {
  if (session?.pendingSeeks > 0) return session.seekTarget;
  return shown ? shown.a.frame.tick : session?.clock.tick ?? 0;
}

function seek(tick) {
  if (session?.kind !== "replay") return;
  const target = Math.round(Math.min(session.last, Math.max(session.first, tick)));
  session.seekTarget = target;
  session.pendingSeeks = (session.pendingSeeks || 0) + 1;
  send({ type: "seek", tick: target });
}

function toRound(direction) {
  if (session?.kind !== "replay") return;
  const target = roundTarget(session.events.roundStarts(session.rounds), currentTick(), direction, session.tickrate);
  if (target !== null) seek(target);
}

function setSpeed(value) {
  $("speed").value = String(value);
  send({ type: "speed", value });
}

function goLive() {
  if (!session?.live) return;
  seek(session.last);
  setSpeed(1);
  send({ type: "play" });
}

$("speed").replaceChildren(...SPEEDS.map((v) => new Option(`${v}x`, String(v), false, v === 1)));
$("refresh").addEventListener("click", listAll);
$("server-url").addEventListener("change", listAll);
$("play").addEventListener("click", () => send({ type: session?.clock.playing ? "pause" : "play" }));
$("speed").addEventListener("change", (e) => setSpeed(Number(e.target.value)));
$("prev-round").addEventListener("click", () => toRound(-1));
$("next-round").addEventListener("click", () => toRound(1));
$("go-live").addEventListener("click", goLive);
$("level").addEventListener("change", (e) => { levelChoice = e.target.value; });
bindKeys(document, {
  speed: setSpeed,
  toggle: () => send({ type: session?.clock.playing ? "pause" : "play" }),
  jumpSeconds: (seconds) => seek(currentTick() + seconds * (session?.tickrate ?? 64)),
  round: toRound,
  goLive,
}, SPEEDS);

// Test hooks (tests/test_radar_page.py) and a handle for the console.
window.radar = {
  get tick() { return shown ? shown.a.frame.tick : null; },
  get frameCount() { return framesReceived; },
  get buffered() { return session ? session.buffer.length : 0; },
  get connected() { return connState === "open"; },
  get connState() { return connState; },
  get session() {
    return session && {
      kind: session.kind, id: session.id, gen: session.gen, playing: session.clock.playing,
      speed: session.clock.speed, live: session.live, liveEdge: session.liveEdge,
      stale: session.stale, first: session.first, last: session.last, deflate: wantDeflate,
    };
  },
  /** Canvas pixels (of the 1024-px canvas) where each player is drawn now. */
  get positions() {
    return Object.fromEntries(drawn.map((p) => [p.name, renderer.px(p.x, p.y)]));
  },
  get interpolation() { return shown && { key: shown.a.key, f: shown.f }; },
  get map() { return map.ready && { ...map.info, level: map.level, label: map.label, images: [...map.images.keys()] }; },
  get markers() { return session ? session.events.markers.map((m) => ({ ...m, x: timeline.xOf(m.tick) })) : []; },
  /** Smokes on the map now, with seconds left. */
  get smokes() {
    if (!session) return [];
    return session.utility.smokes(session.clock.position(), keyPerSecond(session)).map(({ x, y, left }) => ({ x, y, left }));
  },
  get killFeed() { return [...$("killfeed").children].map((li) => li.textContent); },
  speeds: SPEEDS,
  list: listAll,
  connect,
  disconnect,
  seek,
  follow,
  play: () => send({ type: "play" }),
  pause: () => send({ type: "pause" }),
  speed: setSpeed,
};

listAll();
requestAnimationFrame(frameLoop);
