// The browser radar: lists streams and recordings and plays one on a top-down canvas.
// Protocol: docs/protocol.md. Plain ES modules, no build step; msgpack is the vendored
// @msgpack/msgpack (server/static/vendor/README.md). This module wires the others together:
// the catalog, the draw loop, the controls and the test hooks.
import { roundTarget } from "./events.js";
import { bindKeys } from "./keyboard.js";
import { MapView } from "./maptransform.js";
import { Server } from "./net.js";
import { Panels } from "./panels.js";
import { canInflate } from "./protocol.js";
import { Renderer } from "./render.js";
import { Session } from "./session.js";
import { Timeline } from "./timeline.js";

const SPEEDS = [0.25, 0.5, 1, 1.25, 1.5, 2, 4, 8];
const FOLLOW_ZOOM = 2;
const STALE_POLL_MS = 3000;
const PANEL_EVERY_MS = 100;

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
if (params.get("server")) $("server-url").value = params.get("server");
const server = new Server(location.origin, params.get("token") || "");
const wantDeflate = canInflate && params.get("encoding") !== "plain";

const map = new MapView();
const renderer = new Renderer($("radar"), map);
const panels = new Panels(document, (name) => follow(name));
const timeline = new Timeline($("timeline"), (tick) => session?.seek(tick));

let session = null; // the stream or recording being played
let stalePoll = null;
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

const item = (...children) => {
  const li = document.createElement("li");
  li.append(...children);
  return li;
};

async function listAll() {
  useServerField();
  const errors = [];
  try {
    const streams = await server.streams();
    $("streams").replaceChildren(...streams.map((s) => item(
      button(`${s.id} (${s.map}, ${s.subscribers} watching${s.stale ? ", stale" : ""})`, "live", s.id),
      // A live match (not a recording played live) can be replayed while it runs.
      ...(s.source && s.source !== "recording" ? [button("DVR", "replay", s.id)] : []),
    )));
  } catch (err) {
    errors.push(err.message);
  }
  try {
    const { recordings } = await server.json("/recordings");
    $("recordings").replaceChildren(...recordings.map((r) => item(
      button(`${r.id} (${Math.round(r.duration_s)} s)`, "replay", r.id),
    )));
  } catch (err) {
    errors.push(err.message);
  }
  $("list-error").textContent = errors.join("; ");
}

// -- connection ------------------------------------------------------------------------------

function connect(kind, id) {
  disconnect();
  useServerField();
  shown = null;
  drawn = [];
  renderer.reset();
  for (const b of document.querySelectorAll("nav button")) {
    b.classList.toggle("active", b.dataset.kind === kind && b.dataset.id === id);
  }
  $("replay-controls").hidden = kind !== "replay";
  const s = new Session({ kind, id, server, deflate: wantDeflate, speed: Number($("speed").value) }, {
    conn: (state, detail) => s === session && setConn(state, detail),
    hello: (info) => {
      if (s !== session) return;
      loadMap(info.map);
      $("go-live").hidden = !s.live;
    },
    state: () => {
      if (s !== session) return;
      $("play").textContent = s.clock.playing ? "pause" : "play";
      $("go-live").dataset.edge = String(Boolean(s.liveEdge));
      if (s.liveEdge && s.catchingUp) {
        s.catchingUp = false;
        setSpeed(1);
      }
    },
    stale: (stale) => { if (s === session) $("stale").hidden = !stale; },
    frame: () => { framesReceived++; },
    restart: () => { shown = null; renderer.reset(); },
  });
  session = s;
  s.start();
  stalePoll = setInterval(() => s.pollStale(), STALE_POLL_MS);
}

function disconnect() {
  if (!session) return;
  session.close();
  clearInterval(stalePoll);
  session = null;
  $("stale").hidden = true;
  setConn("idle");
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

// -- the picture -----------------------------------------------------------------------------

function follow(name) {
  followed = name;
  $("following").textContent = name ? `following ${name} (click again to stop)` : "";
}

function frameLoop() {
  const s = session;
  const pos = s?.clock.position();
  const picked = s ? s.buffer.pick(pos) : null;
  if (s && picked) {
    if (!map.ready && mapRequest === null) map.fit(picked.a.frame.players || []);
    if (map.ready) {
      placeView(picked);
      drawn = renderer.draw({ picked, pos, keyRate: s.keyRate, utility: s.utility, followed });
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
  const target = followed && (picked.a.frame.players || []).find((p) => p.name === followed);
  if (levelChoice !== "auto") map.level = levelChoice;
  else map.level = map.levelOf(target ? target.z ?? 0 : Infinity) ?? map.level;
  const mover = target && drawn.find((p) => p.name === followed);
  map.follow(mover ? map.toRadar(mover.x, mover.y) : null, FOLLOW_ZOOM);
}

let lastPanels = 0;
function updatePanels(s, frame) {
  if (performance.now() - lastPanels < PANEL_EVERY_MS) return;
  lastPanels = performance.now();
  panels.update({
    frame, players: frame.players || [], roster: s.roster, followed,
    feed: s.events.killFeed(frame.tick, s.events.roundStarts(s.rounds)),
    score: s.events.scoreAt(frame.tick), label: `${s.kind} ${s.id}`,
  });
  $("map-label").textContent = map.label;
}

// -- controls --------------------------------------------------------------------------------

const send = (message) => session?.send(message);
const currentTick = () => session?.targetTick(shown?.a.frame.tick) ?? 0;

function toRound(direction) {
  if (session?.kind !== "replay") return;
  const rounds = session.events.roundStarts(session.rounds);
  const target = roundTarget(rounds, currentTick(), direction, session.tickrate);
  if (target !== null) session.seek(target);
}

function setSpeed(value) {
  $("speed").value = String(value);
  send({ type: "speed", value });
}

/** To the newest frame: seek there and play at 2x, since the edge moves on meanwhile; back
 * to 1x once the server says we are holding at the edge. */
function goLive() {
  if (!session?.live) return;
  session.seek(session.last);
  session.catchingUp = true;
  setSpeed(2);
  send({ type: "play" });
}

const togglePlay = () => send({ type: session?.clock.playing ? "pause" : "play" });

$("speed").replaceChildren(...SPEEDS.map((v) => new Option(`${v}x`, String(v), false, v === 1)));
$("refresh").addEventListener("click", listAll);
$("server-url").addEventListener("change", listAll);
$("play").addEventListener("click", togglePlay);
$("speed").addEventListener("change", (e) => setSpeed(Number(e.target.value)));
$("prev-round").addEventListener("click", () => toRound(-1));
$("next-round").addEventListener("click", () => toRound(1));
$("go-live").addEventListener("click", goLive);
$("level").addEventListener("change", (e) => { levelChoice = e.target.value; });
bindKeys(document, {
  speed: setSpeed,
  toggle: togglePlay,
  jumpSeconds: (seconds) => session?.seek(currentTick() + seconds * session.tickrate),
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
  get map() {
    return map.ready && { ...map.info, level: map.level, label: map.label, images: [...map.images.keys()] };
  },
  get markers() {
    return session ? session.events.markers.map((m) => ({ ...m, x: timeline.xOf(m.tick) })) : [];
  },
  /** Smokes on the map now, with seconds left. */
  get smokes() {
    if (!session) return [];
    const smokes = session.utility.smokes(session.clock.position(), session.keyRate);
    return smokes.map(({ x, y, left }) => ({ x, y, left }));
  },
  get killFeed() { return [...$("killfeed").children].map((li) => li.textContent); },
  speeds: SPEEDS,
  list: listAll,
  connect,
  disconnect,
  seek: (tick) => session?.seek(tick),
  follow,
  play: () => send({ type: "play" }),
  pause: () => send({ type: "pause" }),
  speed: setSpeed,
};

listAll();
requestAnimationFrame(frameLoop);
