// Grenades and their lifetime, from the frames seen so far: smokes (radius and countdown),
// infernos (area and countdown), flashes and HE bursts, grenades in flight with their trail.

export const SMOKE_SECONDS = 18;
export const SMOKE_RADIUS = 144; // game units
export const INFERNO_SECONDS = 7;
const BURST_SECONDS = 0.6; // how long a flash or HE burst is drawn
const TRAIL_POINTS = 96;

// Frames name grenades as the client does (processing/vocabulary.py); the page draws by kind.
const KIND = {
  "Smoke Grenade": "smoke", Flashbang: "flash", "HE Grenade": "he", Molotov: "molotov",
  "Incendiary Grenade": "incendiary", "Decoy Grenade": "decoy",
};
export const kindOf = (type) => KIND[type] || type;

export class Utility {
  constructor() { this.reset(); }

  reset() {
    this.events = []; // {key, type, x, y} from nade_event
    this.trails = new Map(); // nade id -> {type, team, points: [{key, x, y}], lastKey}
    this.infernoStart = new Map(); // inferno id -> key first seen
  }

  /** Takes note of a frame: one just received, or one from before the playback position
   * (fetched after a seek), so a smoke thrown before the seek still counts down and a grenade
   * in flight keeps its trail. Frames may come in any order and more than once. */
  observe(key, frame) {
    // Every detonation (nade_events, schema 2), else the frame's first one (nade_event).
    for (const e of frame.nade_events || (frame.nade_event ? [frame.nade_event] : [])) {
      const type = kindOf(e.type);
      if (!this.events.some((old) => old.key === key && old.type === type)) {
        this.events.push({ key, type, x: e.x, y: e.y });
      }
    }
    for (const nade of frame.nades || []) {
      let trail = this.trails.get(nade.id);
      if (!trail) this.trails.set(nade.id, (trail = { type: kindOf(nade.type), team: nade.team, points: [], lastKey: key }));
      addPoint(trail.points, { key, x: nade.x, y: nade.y });
      trail.lastKey = Math.max(trail.lastKey, key);
    }
    for (const inferno of frame.infernos || []) {
      const known = this.infernoStart.get(inferno.id);
      if (known === undefined || key < known) this.infernoStart.set(inferno.id, key);
    }
  }

  /** Forgets what ended before ``oldestKey`` (bounded memory on a long stream). */
  prune(oldestKey, keyRate) {
    const horizon = oldestKey - SMOKE_SECONDS * keyRate;
    this.events = this.events.filter((e) => e.key >= horizon);
    for (const [id, trail] of this.trails) if (trail.lastKey < oldestKey - keyRate) this.trails.delete(id);
    for (const [id, key] of this.infernoStart) if (key < horizon) this.infernoStart.delete(id);
  }

  /** Smokes blooming at ``pos``: position, seconds left and the fraction of life left. */
  smokes(pos, keyRate) {
    return this.active("smoke", pos, SMOKE_SECONDS * keyRate, keyRate);
  }

  bursts(pos, keyRate) {
    return ["flash", "he"].flatMap((type) => this.active(type, pos, BURST_SECONDS * keyRate, keyRate));
  }

  active(type, pos, lifetime, keyRate) {
    return this.events
      .filter((e) => e.type === type && e.key <= pos && pos < e.key + lifetime)
      .map((e) => ({ ...e, left: (e.key + lifetime - pos) / keyRate, frac: 1 - (pos - e.key) / lifetime }));
  }

  /** Seconds an inferno has left (its fires are in the frame itself). */
  infernoLeft(id, pos, keyRate) {
    const start = this.infernoStart.get(id) ?? pos;
    return Math.max(0, INFERNO_SECONDS - (pos - start) / keyRate);
  }

  /** Grenades still in the frame on screen (``shownKey``), with their trail up to ``pos``. */
  inFlight(pos, shownKey) {
    const out = [];
    for (const [id, trail] of this.trails) {
      const points = trail.points.filter((p) => p.key <= pos);
      if (points.length && trail.lastKey >= shownKey) out.push({ id, ...trail, points });
    }
    return out;
  }
}

/** Inserts a trail point in key order (usually at the end), once per key; keeps the newest. */
function addPoint(points, point) {
  let at = points.length;
  while (at > 0 && points[at - 1].key > point.key) at--;
  if (at > 0 && points[at - 1].key === point.key) return;
  points.splice(at, 0, point);
  if (points.length > TRAIL_POINTS) points.shift();
}
