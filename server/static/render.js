// Drawing one picture of the radar: backdrop, utility, bomb, players (interpolated between
// the frames around the playback position) and where the dead fell.
import { RADAR_SIZE } from "./maptransform.js";
import { TEAM_COLOUR } from "./theme.js";
import { INFERNO_SECONDS, SMOKE_RADIUS, kindOf } from "./utility.js";

const BACKGROUND = "#1c1f22";
const GRID_COLOUR = "#2a2e33";
const NADE_COLOUR = {
  smoke: "#cfcfcf", flash: "#ffffff", he: "#e04040", molotov: "#ff7a00",
  incendiary: "#ff7a00", decoy: "#9b7b55",
};
const TELEPORT_UNITS = 300; // farther than this between two frames: a respawn, no slide

const lerp = (a, b, f) => a + (b - a) * f;
export function lerpAngle(a, b, f) {
  const d = ((((b - a) % 360) + 540) % 360) - 180;
  return a + d * f;
}

/** Players of frame a moved toward their place in frame b by fraction f (position, height
 * and view). */
export function interpolatePlayers(picked) {
  const { a, b, f } = picked;
  const players = a.frame.players || [];
  if (!b || f === 0) return players;
  const next = new Map((b.frame.players || []).map((p) => [p.name, p]));
  return players.map((p) => {
    const q = next.get(p.name);
    if (!q || Math.hypot(q.x - p.x, q.y - p.y) > TELEPORT_UNITS) return p;
    return {
      ...p, x: lerp(p.x, q.x, f), y: lerp(p.y, q.y, f), z: lerp(p.z ?? 0, q.z ?? 0, f),
      view_x: lerpAngle(p.view_x ?? 0, q.view_x ?? 0, f),
    };
  });
}

/** Grenades of frame a moved toward frame b (same id). */
function interpolateNades({ a, b, f }) {
  const nades = a.frame.nades || [];
  if (!b || f === 0) return nades;
  const next = new Map((b.frame.nades || []).map((n) => [n.id, n]));
  return nades.map((n) => {
    const m = next.get(n.id);
    return m ? { ...n, x: lerp(n.x, m.x, f), y: lerp(n.y, m.y, f) } : n;
  });
}

export class Renderer {
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.map = null; // the MapView drawn on (a new one per map load)
    this.lastSeen = new Map(); // name -> {x, y, z, team}: where the dead are drawn
  }

  get size() { return this.canvas.width; }
  px(x, y) { return this.map.toCanvas(this.map.toRadar(x, y), this.size); }

  reset() { this.lastSeen.clear(); }

  /** The backdrop alone (nothing to show yet, or no map at all). */
  drawEmpty() {
    if (this.map?.ready) this.drawBackdrop();
    else {
      this.ctx.fillStyle = BACKGROUND;
      this.ctx.fillRect(0, 0, this.size, this.size);
    }
  }

  /** The level's image under the current view, else a plain grid over the radar square. */
  drawBackdrop() {
    const { ctx, size, map } = this;
    ctx.fillStyle = BACKGROUND;
    ctx.fillRect(0, 0, size, size);
    const [x0, y0] = map.toCanvas([0, 0], size);
    const [x1, y1] = map.toCanvas([RADAR_SIZE, RADAR_SIZE], size);
    if (map.image) {
      ctx.drawImage(map.image, x0, y0, x1 - x0, y1 - y0);
      return;
    }
    ctx.strokeStyle = GRID_COLOUR;
    ctx.lineWidth = 1;
    const step = (x1 - x0) / 16;
    for (let i = 0; i <= 16; i++) {
      ctx.beginPath(); ctx.moveTo(x0 + i * step, y0); ctx.lineTo(x0 + i * step, y1); ctx.stroke();
      ctx.beginPath(); ctx.moveTo(x0, y0 + i * step); ctx.lineTo(x1, y0 + i * step); ctx.stroke();
    }
  }

  /** One picture; returns the players drawn (interpolated) for panels and tests. */
  draw({ picked, pos, keyRate, utility, followed }) {
    const ctx = this.ctx;
    const frame = picked.a.frame;
    const players = interpolatePlayers(picked);
    this.drawBackdrop();
    this.drawUtility(frame, pos, keyRate, utility, picked);
    this.drawBomb(frame.bomb, players);
    const alive = new Set();
    for (const p of players) {
      alive.add(p.name);
      this.lastSeen.set(p.name, { x: p.x, y: p.y, z: p.z ?? 0, team: p.team });
    }
    for (const [name, seen] of this.lastSeen) {
      if (!alive.has(name)) this.drawDead(name, ...this.px(seen.x, seen.y), this.dimmed(seen.z));
    }
    for (const p of players) this.drawPlayer(p, this.dimmed(p.z ?? 0), p.name === followed);
    return players;
  }

  /** Things on another level than the one shown are drawn faintly. */
  dimmed(z) {
    const map = this.map;
    return map.levels.length > 1 && map.levelOf(z) !== map.level;
  }

  drawUtility(frame, pos, keyRate, utility, picked) {
    const ctx = this.ctx;
    for (const smoke of utility.smokes(pos, keyRate)) {
      const [x, y] = this.px(smoke.x, smoke.y);
      ctx.fillStyle = "rgba(200, 200, 200, 0.5)";
      this.disc(x, y, this.map.length(SMOKE_RADIUS, this.size));
      this.countdown(x, y, smoke.left, smoke.frac, "#eee");
    }
    for (const inferno of frame.infernos || []) {
      const hull = convexHull((inferno.fires || []).map((fire) => this.px(fire.x, fire.y)));
      if (!hull.length) continue;
      ctx.fillStyle = "rgba(255, 110, 0, 0.45)";
      ctx.strokeStyle = "#ff7a00";
      ctx.lineWidth = Math.max(6, this.map.length(60, this.size));
      ctx.lineJoin = "round";
      ctx.beginPath();
      hull.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
      ctx.closePath();
      ctx.fill();
      ctx.stroke();
      const [cx, cy] = hull[0];
      const left = utility.infernoLeft(inferno.id, pos, keyRate);
      this.countdown(cx, cy, left, left / INFERNO_SECONDS, "#ffb060");
    }
    for (const burst of utility.bursts(pos, keyRate)) {
      const [x, y] = this.px(burst.x, burst.y);
      ctx.fillStyle = burst.type === "flash" ? `rgba(255,255,255,${0.8 * burst.frac})` : `rgba(230,60,40,${0.7 * burst.frac})`;
      this.disc(x, y, this.map.length(burst.type === "flash" ? 220 : 350, this.size) * (1.2 - burst.frac * 0.5));
    }
    for (const trail of utility.inFlight(pos, picked.a.key)) {
      ctx.strokeStyle = NADE_COLOUR[trail.type] || "#fff";
      ctx.globalAlpha = 0.6;
      ctx.lineWidth = 2;
      ctx.beginPath();
      trail.points.forEach((p, i) => (i ? ctx.lineTo(...this.px(p.x, p.y)) : ctx.moveTo(...this.px(p.x, p.y))));
      ctx.stroke();
      ctx.globalAlpha = 1;
    }
    for (const nade of interpolateNades(picked)) {
      ctx.fillStyle = NADE_COLOUR[kindOf(nade.type)] || "#fff";
      this.disc(...this.px(nade.x, nade.y), 5);
    }
  }

  /** A ring that empties as the utility runs out, and the seconds left. */
  countdown(x, y, seconds, frac, colour) {
    const ctx = this.ctx;
    ctx.strokeStyle = colour;
    ctx.lineWidth = 3;
    ctx.beginPath();
    ctx.arc(x, y, 14, -Math.PI / 2, -Math.PI / 2 + 2 * Math.PI * Math.max(0, frac));
    ctx.stroke();
    ctx.fillStyle = colour;
    ctx.font = "bold 12px system-ui, sans-serif";
    ctx.textAlign = "center";
    ctx.fillText(String(Math.ceil(seconds)), x, y + 4);
  }

  disc(x, y, r) {
    const ctx = this.ctx;
    ctx.beginPath();
    ctx.arc(x, y, r, 0, 2 * Math.PI);
    ctx.fill();
  }

  drawPlayer(p, faint, followed) {
    const ctx = this.ctx;
    const [x, y] = this.px(p.x, p.y);
    const yaw = ((p.view_x ?? 0) * Math.PI) / 180; // 0 = +x, counter-clockwise; screen y down
    ctx.globalAlpha = faint ? 0.35 : 1;
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.moveTo(x, y);
    ctx.lineTo(x + 22 * Math.cos(yaw), y - 22 * Math.sin(yaw));
    ctx.stroke();
    ctx.fillStyle = TEAM_COLOUR[p.team] || "#aaa";
    this.disc(x, y, 9);
    if (followed) {
      ctx.strokeStyle = "#fff";
      ctx.beginPath();
      ctx.arc(x, y, 13, 0, 2 * Math.PI);
      ctx.stroke();
    }
    ctx.fillStyle = "#000";
    ctx.fillRect(x - 12, y + 12, 24, 4);
    ctx.fillStyle = p.hp > 30 ? "#4c4" : "#e44";
    ctx.fillRect(x - 12, y + 12, (24 * Math.max(0, p.hp ?? 0)) / 100, 4);
    ctx.fillStyle = "#eee";
    ctx.font = "13px system-ui, sans-serif";
    ctx.textAlign = "center";
    const doing = p.is_planting ? " (planting)" : p.is_defusing ? " (defusing)" : "";
    ctx.fillText(`${p.name}${doing}`, x, y - 14);
    ctx.globalAlpha = 1;
  }

  drawDead(name, x, y, faint) {
    const ctx = this.ctx;
    ctx.globalAlpha = faint ? 0.35 : 1;
    ctx.strokeStyle = "#777";
    ctx.lineWidth = 3;
    ctx.beginPath();
    ctx.moveTo(x - 7, y - 7); ctx.lineTo(x + 7, y + 7);
    ctx.moveTo(x + 7, y - 7); ctx.lineTo(x - 7, y + 7);
    ctx.stroke();
    ctx.fillStyle = "#777";
    ctx.font = "12px system-ui, sans-serif";
    ctx.textAlign = "center";
    ctx.fillText(name, x, y - 11);
    ctx.globalAlpha = 1;
  }

  drawBomb(bomb, players) {
    if (!bomb || bomb.exploded || bomb.defused) return;
    const ctx = this.ctx;
    if (bomb.carrier) {
      const carrier = players.find((p) => p.name === bomb.carrier);
      if (!carrier) return;
      const [x, y] = this.px(carrier.x, carrier.y);
      ctx.fillStyle = "#e33";
      ctx.fillRect(x + 6, y + 4, 7, 7);
      return;
    }
    const [x, y] = this.px(bomb.x, bomb.y);
    if (bomb.planted) {
      if (Math.floor(performance.now() / 400) % 2) return; // blink
      ctx.fillStyle = "#f22";
      this.disc(x, y, 10);
      ctx.strokeStyle = "#fff";
      ctx.lineWidth = 2;
      ctx.stroke();
      return;
    }
    ctx.fillStyle = "#c33"; // dropped
    ctx.fillRect(x - 5, y - 5, 10, 10);
  }
}

/** Convex hull of points (monotone chain): the area an inferno's fires cover. */
export function convexHull(points) {
  if (points.length < 3) return points;
  const sorted = [...points].sort((p, q) => p[0] - q[0] || p[1] - q[1]);
  const cross = (o, a, b) => (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]);
  const half = (list) => {
    const out = [];
    for (const p of list) {
      while (out.length >= 2 && cross(out[out.length - 2], out[out.length - 1], p) <= 0) out.pop();
      out.push(p);
    }
    out.pop();
    return out;
  };
  return [...half(sorted), ...half([...sorted].reverse())];
}
