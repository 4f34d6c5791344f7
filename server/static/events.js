// A match's events (GET /recordings/<id>/events, made at processing time; docs/recording-format.md):
// the timeline's markers, round navigation, the round clock and a kill feed that is right after
// any seek. A live match's index grows while it is played: it is fetched again now and then and
// merged with the events seen in the frames as they arrive, so nothing waits for the next fetch.

export const MARKER_TYPES = ["kill", "plant", "defuse", "explode"];
const FEED_SIZE = 8;
const MAX_OBSERVED = 2000; // events kept from frames alone (a stream without an index)

/** An event's own fields, whether the server nests them under ``details`` or not. */
const detailsOf = (event) => ({ ...(event.details || {}), ...event });
/** One event seen twice (in the index and in a frame) is the same: its tick, type and who. */
const keyOf = (e) => `${e.tick}|${e.type}|${e.killer ?? ""}|${e.victim ?? ""}`;

/** ``GET /recordings/<id>/events``, or null (an older server, or none for this id). */
export async function fetchEvents(server, id) {
  try {
    const { events } = await server.json(`/recordings/${encodeURIComponent(id)}/events`);
    return Array.isArray(events) ? events : null;
  } catch {
    return null;
  }
}

export class EventsIndex {
  constructor() {
    this.events = []; // sorted by tick
    this.keys = new Set();
    this.complete = false; // a finished recording's index: nothing to learn from frames
    this.fromServer = false;
    this.previous = null; // the frame observed just before the next one, when contiguous
    this.version = 0; // counts changes: what is derived from the events is kept until then
    this.derived = new Map();
  }

  /** ``make()``'s answer, made again only once the events (or ``key``) changed: the timeline
   * asks for markers and rounds on every animation frame. */
  memo(name, key, make) {
    const hit = this.derived.get(name);
    if (hit && hit.version === this.version && hit.key === key) return hit.value;
    const value = make();
    this.derived.set(name, { version: this.version, key, value });
    return value;
  }

  /** Adds the server's events (all of them again, for a live match: known ones are skipped). */
  merge(events) {
    this.fromServer = true;
    this.add(events.map(detailsOf));
  }

  add(events) {
    const fresh = events.filter((e) => !this.keys.has(keyOf(e)));
    if (!fresh.length) return;
    for (const e of fresh) this.keys.add(keyOf(e));
    this.events.push(...fresh);
    this.events.sort((a, b) => a.tick - b.tick);
    this.version++;
    if (!this.fromServer && this.events.length > MAX_OBSERVED) {
      for (const e of this.events.splice(0, this.events.length - MAX_OBSERVED)) this.keys.delete(keyOf(e));
    }
  }

  /** The frames that follow are not contiguous with the last one (a seek, a skip). */
  breakContinuity() { this.previous = null; }

  /** Events a frame shows: the same rules as the server's index (processing/recording.py);
   * transitions only between contiguous frames. */
  observeFrame(frame) {
    if (this.complete) return;
    const prev = this.previous && this.previous.tick < frame.tick ? this.previous : null;
    this.previous = frame;
    const tick = frame.tick;
    const found = [];
    if (frame.round_start) found.push({ tick, type: "round_start" });
    if (prev?.is_freeze && !frame.is_freeze) found.push({ tick, type: "freeze_end" });
    for (const k of frame.kills || []) {
      found.push({ tick, type: "kill", killer: k.killer, victim: k.victim, weapon: k.weapon, is_hs: k.is_hs });
    }
    if (prev) {
      const [was, now] = [prev.bomb || {}, frame.bomb || {}];
      if (now.planted && !was.planted) found.push({ tick, type: "plant", player: now.planted_by ?? null });
      if (now.defused && !was.defused) found.push({ tick, type: "defuse", player: now.defused_by ?? null });
      if (now.exploded && !was.exploded) found.push({ tick, type: "explode", player: null });
      const tWon = (frame.t_wins ?? 0) - (prev.t_wins ?? 0);
      const ctWon = (frame.ct_wins ?? 0) - (prev.ct_wins ?? 0);
      if (!frame.switch && tWon + ctWon === 1 && Math.min(tWon, ctWon) === 0) {
        found.push({ tick, type: "round_end", winner: tWon ? "T" : "CT", t_wins: frame.t_wins, ct_wins: frame.ct_wins });
      }
    }
    if (found.length) this.add(found);
  }

  get markers() {
    return this.memo("markers", null, () => this.events.filter((e) => MARKER_TYPES.includes(e.type)));
  }

  /** Round start ticks: the index's and those of the ``hello`` round timeline, sorted. */
  roundStarts(fromHello = []) {
    return this.memo("rounds", fromHello, () => {
      const starts = new Set(fromHello);
      for (const e of this.events) if (e.type === "round_start") starts.add(e.tick);
      return [...starts].sort((a, b) => a - b);
    });
  }

  /** Kills of the round ``tick`` is in, up to and including ``tick``, oldest first. */
  killFeed(tick, rounds) {
    const roundStart = [...rounds].reverse().find((start) => start <= tick) ?? -Infinity;
    return this.events
      .filter((e) => e.type === "kill" && e.tick >= roundStart && e.tick <= tick)
      .slice(-FEED_SIZE);
  }

  /** The round clock at ``tick`` of a frame: seconds since the round's freeze time ended (or,
   * during freeze time or before its end is known, since the round started), whether the
   * round is over, or null before the first known round start. */
  roundClock(tick, isFreeze, rounds, tickrate) {
    const start = [...rounds].reverse().find((s) => s <= tick);
    if (start === undefined) return null;
    const inRound = this.events.filter((e) => e.tick >= start && e.tick <= tick);
    const freezeEnd = inRound.findLast((e) => e.type === "freeze_end");
    const from = !isFreeze && freezeEnd ? freezeEnd.tick : start;
    return {
      seconds: (tick - from) / tickrate,
      freeze: Boolean(isFreeze),
      over: inRound.some((e) => e.type === "round_end"),
    };
  }
}

/** The round start to go to from ``tick``: the next one, or the previous one (skipping the
 * current round's own start when we are more than 2 s into it, like a media player). */
export function roundTarget(rounds, tick, direction, tickrate) {
  if (direction > 0) return rounds.find((start) => start > tick) ?? null;
  const before = rounds.filter((start) => start < tick - 2 * tickrate);
  return before.length ? before[before.length - 1] : rounds[0] ?? null;
}
