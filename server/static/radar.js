// The browser radar: lists streams and recordings and plays one on a top-down canvas.
// Protocol: docs/protocol.md. Plain ES modules, no build step; msgpack is the vendored
// @msgpack/msgpack (server/static/vendor/README.md). This module wires the others together:
// what is watched (the session and its map), the draw loop, and the test hooks.
import { listAll, markActive } from "./catalog.js";
import { Controls, SPEEDS } from "./controls.js";
import { $ } from "./dom.js";
import { MapView } from "./maptransform.js";
import { Server } from "./net.js";
import { Panels } from "./panels.js";
import { canInflate } from "./protocol.js";
import { Renderer } from "./render.js";
import { Session } from "./session.js";
import { Timeline } from "./timeline.js";

const FOLLOW_ZOOM = 2;
const POLL_MS = 3000;
const PANEL_EVERY_MS = 100;

const params = new URLSearchParams(location.search);
if (params.get("server")) $("server-url").value = params.get("server");
const server = new Server(location.origin, params.get("token") || "");
const wantDeflate = canInflate && params.get("encoding") !== "plain";

let map = new MapView(); // a new one for every map loaded
const renderer = new Renderer($("radar"));
renderer.map = map;
const panels = new Panels((name) => follow(followed === name ? null : name));
const timeline = new Timeline($("timeline"), (tick) => session?.seek(tick));
const controls = new Controls(() => session, () => shown?.a.frame.tick);

let session = null; // the stream or recording being played
let poll = null;
let connState = "idle";
let framesReceived = 0;
let shown = null; // the {a, b, f} on screen
let drawn = []; // players on screen (interpolated)
let followed = null;
let loadedMap = null; // "<server> <map>" of the MapView in use

function setConn(state, detail = "") {
  connState = state;
  $("conn").dataset.state = state;
  $("conn").textContent = detail ? `${state}: ${detail}` : state;
}

function useServerField() {
  server.base = $("server-url").value.trim().replace(/\/+$/, "") || location.origin;
}

function list() {
  useServerField();
  return listAll(server, connect);
}

// -- what is watched -------------------------------------------------------------------------

function connect(kind, id) {
  disconnect();
  useServerField();
  shown = null;
  drawn = [];
  renderer.reset();
  panels.reset();
  markActive(kind, id);
  controls.showSession(kind);
  const s = new Session({ kind, id, server, deflate: wantDeflate, speed: controls.speed }, {
    conn: (state, detail) => s === session && setConn(state, detail),
    hello: (info) => {
      if (s !== session) return;
      loadMap(info.map);
      controls.showState(s);
    },
    state: () => { if (s === session) controls.showState(s); },
    stale: (stale) => { if (s === session) $("stale").hidden = !stale; },
    frame: () => { framesReceived++; },
    restart: () => { shown = null; renderer.reset(); },
  });
  session = s;
  s.start();
  poll = setInterval(() => s.poll(), POLL_MS);
}

function disconnect() {
  if (!session) return;
  session.close();
  clearInterval(poll);
  session = null;
  $("stale").hidden = true;
  setConn("idle");
}

/** A new MapView for the map: players are drawn on a grid fitted to them until the server's
 * transform and images arrive; an answer for a map no longer shown is dropped with its view. */
async function loadMap(mapName) {
  const key = `${server.base} ${mapName}`;
  if (key === loadedMap) return;
  loadedMap = key;
  const view = new MapView();
  map = renderer.map = view;
  await view.load(server, mapName);
  if (view === map) controls.showLevels(view.levels);
}

function follow(name) {
  followed = name;
  $("following").textContent = name ? `following ${name} (click again to stop)` : "";
}

// -- the picture -----------------------------------------------------------------------------

function frameLoop() {
  const s = session;
  const pos = s?.clock.position();
  const picked = s ? s.buffer.pick(pos) : null;
  if (picked) map.fit(picked.a.frame.players || []);
  if (picked && map.ready) {
    placeView(picked);
    drawn = renderer.draw({ picked, pos, keyRate: s.keyRate, utility: s.utility, followed });
    shown = picked;
    updatePanels(s, picked.a.frame);
  } else {
    renderer.drawEmpty();
  }
  if (s?.kind === "replay") {
    timeline.setRange(s.first, s.last);
    timeline.draw({
      tick: shown ? shown.a.frame.tick : s.clock.tick, rounds: s.roundStarts(),
      markers: s.events.markers, liveEdge: s.live ? Boolean(s.liveEdge) : undefined,
    });
  }
  requestAnimationFrame(frameLoop);
}

/** Level and view: the followed player's level and a zoom on them, else the whole map. */
function placeView(picked) {
  const target = followed && (picked.a.frame.players || []).find((p) => p.name === followed);
  if (controls.levelChoice !== "auto") map.level = controls.levelChoice;
  else map.level = map.levelOf(target ? target.z ?? 0 : Infinity) ?? map.level;
  const mover = target && drawn.find((p) => p.name === followed);
  map.follow(mover ? map.toRadar(mover.x, mover.y) : null, FOLLOW_ZOOM);
}

let lastPanels = 0;
function updatePanels(s, frame) {
  if (performance.now() - lastPanels < PANEL_EVERY_MS) return;
  lastPanels = performance.now();
  const rounds = s.roundStarts();
  panels.update({
    frame, players: frame.players || [], roster: s.roster, followed,
    feed: s.events.killFeed(frame.tick, rounds),
    clock: s.events.roundClock(frame.tick, frame.is_freeze, rounds, s.tickrate),
    kind: s.kind, label: `${s.kind} ${s.id}`,
  });
  $("map-label").textContent = map.label;
}

// -- wiring ----------------------------------------------------------------------------------

$("refresh").addEventListener("click", list);
$("server-url").addEventListener("change", list);

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
  get map() {
    const t = map.transform;
    return t && { ...t, level: map.level, label: map.label, images: [...map.images.keys()] };
  },
  /** The tick range the timeline was last drawn with. */
  get timeline() { return { first: timeline.first, last: timeline.last, width: timeline.canvas.width }; },
  get markers() { return session ? session.events.markers : []; },
  get killFeed() { return [...$("killfeed").children].map((li) => li.textContent); },
  speeds: SPEEDS,
  list,
  connect,
  disconnect,
  seek: (tick) => session?.seek(tick),
  follow,
  play: () => session?.send({ type: "play" }),
  pause: () => session?.send({ type: "pause" }),
  speed: (value) => controls.setSpeed(value),
};

list();
requestAnimationFrame(frameLoop);
