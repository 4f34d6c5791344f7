// The browser radar: lists streams and recordings, plays one on a top-down canvas.
// Protocol: docs/protocol.md. Plain ES module, no build step; msgpack is the vendored
// @msgpack/msgpack (server/static/vendor/README.md).
import { decode, encode } from "./vendor/msgpack.js";

// de_mirage radar transform (CS2 overview file): radar px = (x - X0) / SCALE, (Y0 - y) / SCALE.
const MAP = { x0: -3230, y0: 1713, scale: 5.0, size: 1024 };
// Rough places on de_mirage, only to orient the viewer (no radar image is shipped).
const LABELS = [
  ["A", -400, -2100], ["B", -2050, 350], ["MID", -700, -700],
  ["T spawn", 1250, 0], ["CT spawn", -1650, -1950],
];
const TEAM_COLOUR = { T: "#f0a030", CT: "#4a90e2" };
const NADE_COLOUR = {
  smoke: "#cfcfcf", flash: "#ffffff", he: "#e04040", molotov: "#ff7a00",
  incendiary: "#ff7a00", decoy: "#9b7b55",
};
const SMOKE_SECONDS = 18;
const SMOKE_RADIUS = 144; // game units
const LIVE_BUFFER_SECONDS = 1;
const SPEEDS = [0.5, 1, 1.25, 1.5, 2, 4, 8];
const KILLFEED_SIZE = 5;

const $ = (id) => document.getElementById(id);
const canvas = $("radar");
const ctx = canvas.getContext("2d");
const trail = document.createElement("canvas"); // where players have been: the map's shape
trail.width = trail.height = MAP.size;

const params = new URLSearchParams(location.search);
const token = params.get("token") || "";
if (params.get("server")) $("server-url").value = params.get("server");

let session = null; // the stream or recording being played
let connState = "idle";
let framesReceived = 0;
let shown = null; // {frame, key} on screen
const lastSeen = new Map(); // name -> {x, y, team}: where the dead are drawn

// -- small helpers ---------------------------------------------------------------------------

const toPx = (x, y) => [(x - MAP.x0) / MAP.scale, (MAP.y0 - y) / MAP.scale];
const nowS = () => Date.now() / 1000;

function httpBase() {
  const given = $("server-url").value.trim().replace(/\/+$/, "");
  return given || location.origin;
}

// Where the server listens ({ws, http} from /streams): WebSockets have their own port, except
// behind a proxy (an OpenShift Route) that serves both on one origin.
let ports = null;

function wsUrl(path) {
  const url = new URL(path, httpBase()); // http -> ws, https -> wss
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  if (ports && url.port === String(ports.http)) url.port = String(ports.ws);
  if (token) url.searchParams.set("token", token);
  return url.href;
}

async function getJson(path) {
  // The token goes in the query, not a header: a header would need a CORS preflight
  // (OPTIONS), and the server answers GET only.
  const url = new URL(path, httpBase());
  if (token) url.searchParams.set("token", token);
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function setConn(state, detail = "") {
  connState = state;
  const label = $("conn");
  label.dataset.state = state;
  label.textContent = detail ? `${state}: ${detail}` : state;
}

// -- catalog ---------------------------------------------------------------------------------

async function listAll() {
  $("list-error").textContent = "";
  const fill = (list, items, kind, describe) => {
    list.replaceChildren(
      ...items.map((item) => {
        const li = document.createElement("li");
        const button = document.createElement("button");
        button.type = "button";
        button.textContent = describe(item);
        button.dataset.kind = kind;
        button.dataset.id = item.id;
        button.addEventListener("click", () => connect(kind, item.id));
        li.append(button);
        return li;
      }),
    );
  };
  const errors = [];
  try {
    const catalog = await getJson("/streams");
    const { streams } = catalog;
    ports = catalog.ports;
    fill($("streams"), streams, "live", (s) => `${s.id} (${s.map}, ${s.subscribers} watching)`);
  } catch (err) {
    errors.push(err.message);
  }
  try {
    const { recordings } = await getJson("/recordings");
    fill($("recordings"), recordings, "replay", (r) => `${r.id} (${Math.round(r.duration_s)} s)`);
  } catch (err) {
    errors.push(err.message);
  }
  $("list-error").textContent = errors.join("; ");
}

// -- connection ------------------------------------------------------------------------------

function connect(kind, id) {
  disconnect();
  session = {
    kind, id, ws: null, rate: 64, tickrate: 64, epoch: 0, offset: 0, frames: [],
    gen: 0, anchorTick: 0, anchorTime: nowS(), playing: false, speed: 1, ended: false,
    first: 0, last: 0, rounds: [], smokes: [], kills: [], lastSeq: -1, retries: 0,
    closedByUs: false,
  };
  shown = null;
  lastSeen.clear();
  trail.getContext("2d").clearRect(0, 0, MAP.size, MAP.size);
  for (const button of document.querySelectorAll("nav button")) {
    button.classList.toggle("active", button.dataset.kind === kind && button.dataset.id === id);
  }
  $("replay-controls").hidden = kind !== "replay";
  open(session);
}

function disconnect() {
  if (!session) return;
  session.closedByUs = true;
  clearTimeout(session.retryTimer);
  if (session.ws) session.ws.close(1000);
  session = null;
  setConn("idle");
}

function open(s) {
  setConn("connecting");
  const ws = new WebSocket(wsUrl(`/${s.kind}/${encodeURIComponent(s.id)}`));
  ws.binaryType = "arraybuffer";
  s.ws = ws;
  ws.onmessage = (event) => {
    if (typeof event.data === "string") return; // the protocol is binary only
    onMessage(s, decode(new Uint8Array(event.data)));
  };
  ws.onclose = (event) => {
    if (s !== session || s.closedByUs) return;
    setConn("closed", `${event.code} ${event.reason || ""}`.trim());
    if (s.kind === "live" && event.code !== 4004 && !s.ended) {
      // Reconnect with backoff and resume where we were (protocol: resume_seq).
      const delay = Math.min(8000, 500 * 2 ** s.retries++);
      s.retryTimer = setTimeout(() => s === session && open(s), delay);
    }
  };
  ws.onerror = () => setConn("error");
}

function send(message) {
  if (session?.ws?.readyState === WebSocket.OPEN) session.ws.send(encode(message));
}

function onMessage(s, msg) {
  if (s !== session) return;
  switch (msg.type) {
    case "hello": return onHello(s, msg);
    case "ticks": return onTicks(s, msg);
    case "state": return onState(s, msg);
    case "subscribed": return setConn("open", `buffer ${msg.buffer}`);
    case "skip": return onSkip(s, msg);
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
  s.offset = msg.server_time - nowS(); // server clock minus ours
  s.roster = msg.roster || [];
  s.retries = 0;
  setConn("open");
  if (s.kind === "live") {
    s.rate = info.rate;
    if (s.epoch !== info.epoch) resetTimeline(s); // the server restarted: seqs start over
    s.epoch = info.epoch;
    const buffer = Math.min(msg.max_buffer, Math.round(LIVE_BUFFER_SECONDS * s.rate));
    const resume = s.lastSeq >= 0 ? { resume_seq: s.lastSeq + 1 } : {};
    send({ type: "subscribe", buffer, ...resume });
  } else {
    s.rate = info.tickrate;
    s.rounds = msg.rounds || [];
    send({ type: "speed", value: Number($("speed").value) }); // state + first frame follow hello
  }
}

function onState(s, msg) {
  if (msg.gen !== s.gen) resetGeneration(s, msg.gen);
  s.anchorTick = msg.tick;
  s.anchorTime = nowS();
  s.playing = msg.state === "playing";
  s.ended = msg.state === "ended";
  s.speed = msg.speed;
  $("play").textContent = s.playing ? "pause" : "play";
}

function resetGeneration(s, gen) {
  s.gen = gen;
  s.frames = [];
  s.smokes = [];
  s.kills = [];
}

/** A new live epoch: frames, events and the picture of the old timeline mean nothing now. */
function resetTimeline(s) {
  resetGeneration(s, s.gen);
  s.lastSeq = -1;
  shown = null;
  lastSeen.clear();
}

/** Moved to the live edge at ``to_seq``: buffered frames from there on are from an abandoned
 * position (resume_unknown) and would make the next frames look like duplicates. */
function onSkip(s, msg) {
  s.frames = s.frames.filter((f) => f.key < msg.to_seq);
  s.lastSeq = msg.to_seq - 1;
  setConn("open", `skipped ${msg.skipped ?? "?"} (${msg.reason})`);
}

function onTicks(s, msg) {
  let anchored = true; // position(s) is known for these frames
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
    if (s.frames.length && key <= s.frames[s.frames.length - 1].key) return; // duplicate
    s.frames.push({ key, frame });
    s.lastSeq = seq;
    framesReceived++;
    if (frame.nade_event?.type === "smoke") s.smokes.push({ key, x: frame.nade_event.x, y: frame.nade_event.y });
    for (const kill of frame.kills || []) s.kills.push({ key, ...kill });
  });
  const keyRate = keyPerSecond(s);
  if (anchored) dropPlayed(s, position(s) - keyRate);
  const oldest = s.frames.length ? s.frames[0].key : 0;
  s.smokes = s.smokes.filter((smoke) => smoke.key + SMOKE_SECONDS * keyRate >= oldest);
  s.kills = s.kills.slice(-50);
}

/** Drops frames played before ``cutoff`` but keeps the one at/before it. pick() does this too,
 * but it runs from requestAnimationFrame, which a background tab pauses. */
function dropPlayed(s, cutoff) {
  let drop = 0;
  while (drop + 1 < s.frames.length && s.frames[drop + 1].key <= cutoff) drop++;
  if (drop) s.frames.splice(0, drop);
}

// -- playback clock --------------------------------------------------------------------------

/** Frame keys per second of playback: seqs on a live stream, ticks on a recording. */
const keyPerSecond = (s) => (s.kind === "live" ? s.rate : s.tickrate);

/** Where playback is now, in frame keys (fractional). */
function position(s) {
  if (s.kind === "live") return (nowS() + s.offset - s.epoch) * s.rate;
  if (!s.playing) return s.anchorTick;
  return s.anchorTick + (nowS() - s.anchorTime) * s.tickrate * s.speed;
}

/** The frame at/before ``pos`` and the one after it (for interpolation); drops older frames. */
function pick(s, pos) {
  const frames = s.frames;
  if (!frames.length) return null;
  let lo = 0;
  let hi = frames.length - 1;
  if (frames[0].key > pos) hi = 0; // ahead of our clock (offset error): show the oldest
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (frames[mid].key <= pos) lo = mid;
    else hi = mid - 1;
  }
  if (lo > 0) frames.splice(0, lo);
  const a = frames[0];
  const b = frames[1];
  const f = b && pos > a.key ? Math.min(1, (pos - a.key) / (b.key - a.key)) : 0;
  return { a, b: b && !b.frame.round_start ? b : null, f };
}

// -- drawing ---------------------------------------------------------------------------------

function makeBackground() {
  const bg = document.createElement("canvas");
  bg.width = bg.height = MAP.size;
  const g = bg.getContext("2d");
  g.fillStyle = "#1c1f22";
  g.fillRect(0, 0, MAP.size, MAP.size);
  g.strokeStyle = "#2a2e33";
  g.lineWidth = 1;
  for (let i = 0; i <= MAP.size; i += 64) {
    g.beginPath(); g.moveTo(i + 0.5, 0); g.lineTo(i + 0.5, MAP.size); g.stroke();
    g.beginPath(); g.moveTo(0, i + 0.5); g.lineTo(MAP.size, i + 0.5); g.stroke();
  }
  g.fillStyle = "#4a5058";
  g.font = "bold 28px system-ui, sans-serif";
  g.textAlign = "center";
  for (const [name, x, y] of LABELS) g.fillText(name, ...toPx(x, y));
  return bg;
}

const background = makeBackground();

const lerp = (a, b, f) => a + (b - a) * f;
function lerpAngle(a, b, f) {
  const d = ((((b - a) % 360) + 540) % 360) - 180;
  return a + d * f;
}

/** Players of frame a, moved toward their position in frame b by fraction f. */
function interpolated(pick) {
  const { a, b, f } = pick;
  if (!b || f === 0) return a.frame.players || [];
  const next = new Map((b.frame.players || []).map((p) => [p.name, p]));
  return (a.frame.players || []).map((p) => {
    const q = next.get(p.name);
    if (!q || Math.hypot(q.x - p.x, q.y - p.y) > 300) return p; // respawn/teleport: no slide
    return { ...p, x: lerp(p.x, q.x, f), y: lerp(p.y, q.y, f), view_x: lerpAngle(p.view_x, q.view_x, f) };
  });
}

function draw(s, picked, pos) {
  const frame = picked.a.frame;
  const players = interpolated(picked);
  const keyRate = keyPerSecond(s);
  ctx.drawImage(background, 0, 0);
  ctx.drawImage(trail, 0, 0);

  for (const smoke of s.smokes) {
    if (smoke.key > pos || pos > smoke.key + SMOKE_SECONDS * keyRate) continue;
    const [px, py] = toPx(smoke.x, smoke.y);
    ctx.fillStyle = "rgba(200, 200, 200, 0.55)";
    disc(px, py, SMOKE_RADIUS / MAP.scale);
  }
  ctx.fillStyle = "#ff7a00";
  for (const inferno of frame.infernos || []) {
    for (const fire of inferno.fires) disc(...toPx(fire.x, fire.y), 4);
  }
  for (const nade of frame.nades || []) {
    ctx.fillStyle = NADE_COLOUR[nade.type] || "#fff";
    disc(...toPx(nade.x, nade.y), 4);
  }
  drawBomb(frame.bomb, players);

  const alive = new Set();
  const t = trail.getContext("2d");
  t.fillStyle = "rgba(120, 130, 140, 0.06)";
  for (const p of players) {
    alive.add(p.name);
    lastSeen.set(p.name, { x: p.x, y: p.y, team: p.team });
    const [px, py] = toPx(p.x, p.y);
    if (picked.a !== shown?.a) t.fillRect(px - 1, py - 1, 3, 3);
    drawPlayer(p, px, py);
  }
  for (const [name, seen] of lastSeen) {
    if (!alive.has(name)) drawDead(name, ...toPx(seen.x, seen.y));
  }
  return alive;
}

function disc(x, y, r) {
  ctx.beginPath();
  ctx.arc(x, y, r, 0, 2 * Math.PI);
  ctx.fill();
}

function drawPlayer(p, px, py) {
  const yaw = (p.view_x * Math.PI) / 180; // 0 = +x, counter-clockwise; screen y points down
  ctx.strokeStyle = "#fff";
  ctx.lineWidth = 2;
  ctx.beginPath();
  ctx.moveTo(px, py);
  ctx.lineTo(px + 22 * Math.cos(yaw), py - 22 * Math.sin(yaw));
  ctx.stroke();
  ctx.fillStyle = TEAM_COLOUR[p.team] || "#aaa";
  disc(px, py, 9);
  ctx.fillStyle = "#000";
  ctx.fillRect(px - 12, py + 12, 24, 4);
  ctx.fillStyle = p.hp > 30 ? "#4c4" : "#e44";
  ctx.fillRect(px - 12, py + 12, (24 * Math.max(0, p.hp ?? 0)) / 100, 4);
  ctx.fillStyle = "#eee";
  ctx.font = "13px system-ui, sans-serif";
  ctx.textAlign = "center";
  const doing = p.is_planting ? " (planting)" : p.is_defusing ? " (defusing)" : "";
  ctx.fillText(`${p.name} ${p.hp ?? ""}${doing}`, px, py - 14);
}

function drawDead(name, px, py) {
  ctx.strokeStyle = "#777";
  ctx.lineWidth = 3;
  ctx.beginPath();
  ctx.moveTo(px - 7, py - 7); ctx.lineTo(px + 7, py + 7);
  ctx.moveTo(px + 7, py - 7); ctx.lineTo(px - 7, py + 7);
  ctx.stroke();
  ctx.fillStyle = "#777";
  ctx.font = "12px system-ui, sans-serif";
  ctx.textAlign = "center";
  ctx.fillText(name, px, py - 11);
}

function drawBomb(bomb, players) {
  if (!bomb || bomb.exploded || bomb.defused) return;
  let [px, py] = toPx(bomb.x, bomb.y);
  if (bomb.carrier) {
    const carrier = players.find((p) => p.name === bomb.carrier);
    if (carrier) [px, py] = toPx(carrier.x, carrier.y);
    ctx.fillStyle = "#e33";
    ctx.fillRect(px + 6, py + 4, 7, 7);
    return;
  }
  if (bomb.planted) {
    if (Math.floor(performance.now() / 400) % 2) return; // blink
    ctx.fillStyle = "#f22";
    disc(px, py, 10);
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = 2;
    ctx.stroke();
    return;
  }
  ctx.fillStyle = "#c33"; // dropped
  ctx.fillRect(px - 5, py - 5, 10, 10);
}

function drawTimeline(s, pos) {
  const tl = $("timeline");
  const g = tl.getContext("2d");
  const { width, height } = tl;
  const span = Math.max(1, s.last - s.first);
  const xOf = (tick) => ((tick - s.first) / span) * width;
  g.fillStyle = "#2a2e33";
  g.fillRect(0, 0, width, height);
  g.fillStyle = "#3d5a80";
  g.fillRect(0, 8, xOf(pos), height - 16);
  g.fillStyle = "#ccc";
  g.font = "11px system-ui, sans-serif";
  for (const round of s.rounds) {
    const x = xOf(round.tick);
    g.fillRect(x, 0, 1, height);
    g.fillText(`R${round.round}`, x + 2, 10);
  }
  g.fillStyle = "#fff";
  g.fillRect(xOf(pos) - 1, 0, 3, height);
}

function updatePanels(s, frame, pos, alive) {
  $("tick-label").textContent = `tick ${frame.tick}`;
  const score = $("score");
  score.replaceChildren(
    span("t", `${frame.t || "T"} ${frame.t_wins ?? 0}`), " : ",
    span("ct", `${frame.ct_wins ?? 0} ${frame.ct || "CT"}`),
  );
  const seconds = Math.max(0, frame.round_time || 0);
  const clock = `${Math.floor(seconds / 60)}:${String(Math.floor(seconds % 60)).padStart(2, "0")}`;
  $("clock").textContent = `${clock}${frame.is_freeze ? " (freeze time)" : ""} · ${s.kind} ${s.id}`;
  const kills = s.kills.filter((k) => k.key <= pos).slice(-KILLFEED_SIZE);
  $("killfeed").replaceChildren(
    ...kills.map((k) => {
      const li = document.createElement("li");
      li.textContent = `${k.killer || "world"} [${k.weapon}${k.is_hs ? " HS" : ""}] ${k.victim}`;
      return li;
    }),
  );
  const names = [...new Set([...(s.roster || []).map((r) => r.name), ...lastSeen.keys()])].sort();
  $("players").replaceChildren(
    ...names.map((name) => {
      const li = document.createElement("li");
      const p = (frame.players || []).find((q) => q.name === name);
      const rostered = (s.roster || []).find((r) => r.name === name);
      const team = p?.team || lastSeen.get(name)?.team || rostered?.team || "";
      li.className = `${team} ${alive.has(name) ? "" : "dead"}`;
      li.textContent = p ? `${name} ${p.hp} hp $${p.money}` : name;
      return li;
    }),
  );
}

function span(cls, text) {
  const el = document.createElement("span");
  el.className = cls;
  el.textContent = text;
  return el;
}

let lastPanelUpdate = 0;
function frameLoop() {
  const s = session;
  if (s) {
    const pos = position(s);
    const picked = pick(s, pos);
    if (picked) {
      const alive = draw(s, picked, pos);
      if (performance.now() - lastPanelUpdate > 100) {
        updatePanels(s, picked.a.frame, pos, alive);
        lastPanelUpdate = performance.now();
      }
      shown = picked;
    }
    if (s.kind === "replay") drawTimeline(s, picked ? picked.a.frame.tick : s.anchorTick);
  } else {
    ctx.drawImage(background, 0, 0);
  }
  requestAnimationFrame(frameLoop);
}

// -- controls --------------------------------------------------------------------------------

function seek(tick) {
  send({ type: "seek", tick: Math.round(tick) });
}

$("speed").replaceChildren(
  ...SPEEDS.map((value) => new Option(`${value}x`, String(value), false, value === 1)),
);
$("refresh").addEventListener("click", listAll);
$("server-url").addEventListener("change", listAll);
$("play").addEventListener("click", () => send({ type: session?.playing ? "pause" : "play" }));
$("speed").addEventListener("change", (e) => send({ type: "speed", value: Number(e.target.value) }));
$("timeline").addEventListener("click", (e) => {
  if (!session || session.kind !== "replay") return;
  const rect = e.target.getBoundingClientRect();
  const frac = Math.min(1, Math.max(0, (e.clientX - rect.left) / rect.width));
  seek(session.first + frac * (session.last - session.first));
});

// Test hooks (tests/test_radar_page.py) and a handle for the console.
window.radar = {
  get tick() { return shown ? shown.a.frame.tick : null; },
  get frameCount() { return framesReceived; },
  get buffered() { return session ? session.frames.length : 0; },
  get connected() { return connState === "open"; },
  get connState() { return connState; },
  get session() { return session && { kind: session.kind, id: session.id, gen: session.gen, playing: session.playing, speed: session.speed }; },
  get positions() {
    return Object.fromEntries((shown ? interpolated(shown) : []).map((p) => [p.name, toPx(p.x, p.y)]));
  },
  speeds: SPEEDS,
  list: listAll,
  connect,
  disconnect,
  seek,
  play: () => send({ type: "play" }),
  pause: () => send({ type: "pause" }),
  speed: (value) => send({ type: "speed", value }),
};

listAll();
requestAnimationFrame(frameLoop);
