// A recording's events index (GET /recordings/<id>/events, made at processing time): the
// timeline's markers, round navigation, and a kill feed that is right after any seek.
// Without one (an older server), kills are collected from the frames as they arrive.

export const MARKER_TYPES = ["kill", "plant", "defuse", "explode"];
const FEED_SIZE = 8;

/** An event's own fields, whether the server nests them under ``details`` or not. */
const detailsOf = (event) => ({ ...(event.details || {}), ...event });

export class EventsIndex {
  constructor(events = [], fromServer = false) {
    this.events = events.map(detailsOf).sort((a, b) => a.tick - b.tick);
    this.fromServer = fromServer;
  }

  static async load(server, id) {
    try {
      const { events } = await server.json(`/recordings/${encodeURIComponent(id)}/events`);
      return new EventsIndex(events, true);
    } catch {
      return new EventsIndex([], false);
    }
  }

  /** Adds kills seen in frames (only when the server has no index). */
  observeFrame(frame) {
    if (this.fromServer) return;
    for (const kill of frame.kills || []) this.events.push({ tick: frame.tick, type: "kill", ...kill });
    if (frame.round_start) this.events.push({ tick: frame.tick, type: "round_start" });
    if (this.events.length > 500) this.events.splice(0, this.events.length - 500);
  }

  get markers() { return this.events.filter((e) => MARKER_TYPES.includes(e.type)); }

  /** Round start ticks: the index's, else the ``hello`` round timeline. */
  roundStarts(fallback = []) {
    const starts = this.events.filter((e) => e.type === "round_start").map((e) => e.tick);
    return starts.length ? starts : fallback;
  }

  /** Kills of the round ``tick`` is in, up to and including ``tick``, oldest first. */
  killFeed(tick, rounds) {
    const roundStart = [...rounds].reverse().find((start) => start <= tick) ?? -Infinity;
    return this.events
      .filter((e) => e.type === "kill" && e.tick >= roundStart && e.tick <= tick)
      .slice(-FEED_SIZE);
  }

  /** The score after the last round end at/before ``tick``, or null when none. */
  scoreAt(tick) {
    const ended = this.events.filter((e) => e.type === "round_end" && e.tick <= tick && e.t_wins !== undefined);
    const last = ended[ended.length - 1];
    return last ? { t: last.t_wins, ct: last.ct_wins } : null;
  }
}

/** The round start to go to from ``tick``: the next one, or the previous one (skipping the
 * current round's own start when we are more than 2 s into it, like a media player). */
export function roundTarget(rounds, tick, direction, tickrate) {
  if (direction > 0) return rounds.find((start) => start > tick) ?? null;
  const before = rounds.filter((start) => start < tick - 2 * tickrate);
  return before.length ? before[before.length - 1] : rounds[0] ?? null;
}
