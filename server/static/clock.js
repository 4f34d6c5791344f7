// Where playback is, in frame keys (ticks on a replay, seqs on a live stream), and the frames
// around it: the clock runs between server messages so motion is smooth at any speed.

export const nowS = () => Date.now() / 1000;

/** A replay session's clock: the server's last ``state`` plus the time since. */
export class ReplayClock {
  constructor(now = nowS) {
    this.now = now;
    this.tick = 0;
    this.at = now();
    this.playing = false;
    this.speed = 1;
    this.tickrate = 64;
  }

  anchor(tick, playing, speed) {
    this.tick = tick;
    this.at = this.now();
    this.playing = playing;
    this.speed = speed;
  }

  position() {
    if (!this.playing) return this.tick;
    return this.tick + (this.now() - this.at) * this.tickrate * this.speed;
  }
}

/** A live stream's clock: frame ``s`` plays at ``epoch + s / rate`` on the server's clock. */
export class LiveClock {
  constructor(now = nowS) {
    this.now = now;
    this.epoch = 0;
    this.rate = 64;
    this.offset = 0; // server clock minus ours
  }

  position() {
    return (this.now() + this.offset - this.epoch) * this.rate;
  }
}

/** A live match's clock: its frames exist only once the game posted them, so they are played
 * as they arrive, a little behind the newest. ``base`` is the latest "arrival time minus
 * key / rate" seen (every frame has arrived by then), shrinking slowly so one late burst does
 * not add latency for ever. */
export class ArrivalClock {
  constructor(now = nowS, margin = 0.15) {
    this.now = now;
    this.rate = 64;
    this.margin = margin; // seconds behind the newest frame, for jitter between bursts
    this.base = null;
    this.lastArrival = 0;
  }

  arrived(newestKey) {
    const t = this.now();
    const sample = t - newestKey / this.rate;
    const relaxed = this.base === null ? sample : this.base - 0.02 * (t - this.lastArrival);
    this.base = Math.max(sample, relaxed);
    this.lastArrival = t;
  }

  position() {
    if (this.base === null) return -Infinity;
    return (this.now() - this.base - this.margin) * this.rate;
  }
}

/** Frames in key order, with the pair around a position for interpolation. */
export class FrameBuffer {
  constructor() {
    this.frames = []; // [{key, frame}]
  }

  get length() { return this.frames.length; }
  clear() { this.frames = []; }

  /** Appends a frame; false for a duplicate or an older one. */
  push(key, frame) {
    const last = this.frames[this.frames.length - 1];
    if (last && key <= last.key) return false;
    this.frames.push({ key, frame });
    return true;
  }

  /** Keeps frames from ``key`` on (a buffered future that is no longer ours). */
  dropFrom(key) {
    this.frames = this.frames.filter((f) => f.key < key);
  }

  /** Drops frames played before ``cutoff`` but keeps the one at/before it. */
  dropBefore(cutoff) {
    let drop = 0;
    while (drop + 1 < this.frames.length && this.frames[drop + 1].key <= cutoff) drop++;
    if (drop) this.frames.splice(0, drop);
  }

  /** {a, b, f}: the frame at/before ``pos``, the next one (none across a round start) and
   * how far between them ``pos`` is; null when empty. */
  pick(pos) {
    if (!this.frames.length) return null;
    this.dropBefore(pos);
    const a = this.frames[0];
    const b = this.frames[1]?.frame.round_start ? null : this.frames[1];
    const f = b && pos > a.key ? Math.min(1, (pos - a.key) / (b.key - a.key)) : 0;
    return { a, b: b ?? null, f };
  }
}
