// One stream or recording being watched: the connection, its messages (docs/protocol.md) and
// what they build up (frames, utility, events, clock). The page reacts through ``ui`` hooks.
import { ArrivalClock, FrameBuffer, LiveClock, ReplayClock, nowS } from "./clock.js";
import { EventsIndex, fetchEvents } from "./events.js";
import { StreamClient } from "./protocol.js";
import { Utility } from "./utility.js";

const LIVE_BUFFER_SECONDS = 1;
const HISTORY_SECONDS = 20; // fetched before a seek's target: smokes and fires still burning

export class Session {
  /**
   * @param {{kind: "live"|"replay", id: string, server, deflate: boolean, speed: number}} options
   * @param {{conn(state, detail), hello(info), state(), stale(bool), frame(), restart()}} ui
   */
  constructor({ kind, id, server, deflate, speed }, ui) {
    Object.assign(this, {
      kind, id, server, ui, speed0: speed, buffer: new FrameBuffer(), utility: new Utility(),
      events: new EventsIndex(), clock: kind === "live" ? new LiveClock() : new ReplayClock(),
      tickrate: 64, rate: 64, epoch: null, gen: 0, stateGen: 0, lastSeq: -1, first: 0, last: 0,
      rounds: [], roster: [], ended: false, live: false, liveEdge: undefined, stale: false,
      pendingSeeks: 0, seekTarget: 0,
    });
    const query = deflate ? { encoding: "deflate" } : {};
    this.client = new StreamClient(server.wsUrl(`/${kind}/${encodeURIComponent(id)}`, query), {
      onMessage: (msg) => this.onMessage(msg),
      onState: (state, detail) => ui.conn(state, detail),
      reconnect: kind === "live",
    });
  }

  /** Connects (the ``ui`` hooks may be called from here on). */
  start() {
    this.client.open();
  }

  /** The events index of a replay: a recording's once (complete: frames add nothing), a live
   * match's again on every poll (it grows; frames fill in between). */
  async loadEvents() {
    const events = await fetchEvents(this.server, this.id);
    if (this.client.closed || !events) return;
    this.events.merge(events);
    this.events.complete = !this.live;
  }

  /** Round start ticks: the events index's and the ``hello`` round timeline's. */
  roundStarts() { return this.events.roundStarts(this.rounds); }

  close() { this.client.close(); }
  send(message) { this.client.send(message); }

  /** Frame keys per second of playback: seqs on a live stream, ticks on a recording. */
  get keyRate() { return this.kind === "live" ? this.rate : this.tickrate; }

  /** Where playback is going: keys pressed quickly add up (-5 s twice is -10 s even before
   * the first seek is answered). */
  targetTick(shownTick) {
    return this.pendingSeeks > 0 ? this.seekTarget : shownTick ?? this.clock.tick;
  }

  seek(tick) {
    if (this.kind !== "replay") return;
    this.seekTarget = Math.round(Math.min(this.last, Math.max(this.first, tick)));
    this.pendingSeeks++;
    this.send({ type: "seek", tick: this.seekTarget });
  }

  onMessage(msg) {
    switch (msg.type) {
      case "hello": return this.onHello(msg);
      case "ticks": return this.onTicks(msg);
      case "state": return this.onState(msg);
      case "subscribed": return this.ui.conn("open", `buffer ${msg.buffer}`);
      case "skip": return this.onSkip(msg);
      case "stale": return this.setStale(msg.stale);
      case "end": this.ended = true; return this.ui.conn("open", "end of stream");
      case "error": return this.ui.conn("open", `error ${msg.code}: ${msg.message}`);
      default: return undefined;
    }
  }

  onHello(msg) {
    const info = msg.stream;
    this.tickrate = this.clock.tickrate = info.tickrate;
    this.first = info.first_tick;
    this.last = info.last_tick;
    this.roster = msg.roster || [];
    this.ui.conn("open");
    if (this.kind === "live") {
      if (this.epoch !== null && this.epoch !== info.epoch) this.restart(); // seqs start over
      // A recorded stream plays frame s at epoch + s / rate; a live match's epoch is an
      // identity, not a time: its frames are played as they arrive.
      if (typeof info.epoch !== "number" && !(this.clock instanceof ArrivalClock)) this.clock = new ArrivalClock();
      this.rate = this.clock.rate = info.rate;
      this.clock.offset = msg.server_time - nowS();
      this.epoch = this.clock.epoch = info.epoch;
      const buffer = Math.min(msg.max_buffer, Math.round(LIVE_BUFFER_SECONDS * this.rate));
      const resume = this.lastSeq >= 0 ? { resume_seq: this.lastSeq + 1, epoch: this.epoch } : {};
      this.send({ type: "subscribe", buffer, ...resume });
    } else {
      this.rate = info.tickrate;
      this.live = Boolean(msg.live);
      this.rounds = (msg.rounds || []).map((r) => r.tick);
      this.send({ type: "speed", value: this.speed0 }); // state + first frame follow hello
      this.loadEvents();
    }
    this.ui.hello(info);
  }

  onState(msg) {
    if (msg.gen !== this.gen) this.newGeneration(msg.gen);
    if (msg.gen !== this.stateGen) { // a seek or step answered (its ticks may come first)
      this.stateGen = msg.gen;
      this.pendingSeeks = Math.max(0, this.pendingSeeks - 1);
      this.fetchHistory(msg.tick);
    }
    this.clock.anchor(msg.tick, msg.state === "playing", msg.speed);
    this.ended = msg.state === "ended";
    if (msg.last_tick !== undefined) this.last = msg.last_tick;
    if (msg.live_edge !== undefined) this.liveEdge = msg.live_edge;
    this.ui.state();
  }

  /** After a jump, the frames just before it: utility thrown earlier is still on the map. */
  fetchHistory(tick) {
    if (tick <= this.first) return;
    const from = Math.max(this.first, Math.round(tick - HISTORY_SECONDS * this.tickrate));
    const credit = Math.ceil((tick - from) * 1.1) + 16; // frames, never more than ticks
    this.send({ type: "fetch", id: this.gen, from_tick: from, to_tick: tick - 1, credit });
  }

  newGeneration(gen) {
    this.gen = gen;
    this.buffer.clear();
    this.utility.reset();
    this.events.breakContinuity();
  }

  /** A new live epoch: frames and the picture of the old timeline mean nothing now. */
  restart() {
    this.newGeneration(this.gen);
    this.lastSeq = -1;
    this.ui.restart();
  }

  /** Moved to the live edge at ``to_seq``: buffered frames from there on are from an
   * abandoned position (resume_unknown) and would make the next frames look like duplicates. */
  onSkip(msg) {
    this.buffer.dropFrom(msg.to_seq);
    this.lastSeq = msg.to_seq - 1;
    this.events.breakContinuity();
    this.ui.conn("open", `skipped ${msg.skipped ?? "?"} (${msg.reason})`);
  }

  onTicks(msg) {
    if (msg.fetch !== undefined) { // history before a seek (fetchHistory)
      if (msg.fetch === this.gen) for (const frame of msg.frames) this.utility.observe(frame.tick, frame);
      return;
    }
    let anchored = true; // the playback position is known for these frames
    if (this.kind === "replay") {
      if (msg.gen < this.gen) return; // sent before a seek: stale
      if (msg.gen > this.gen) {
        this.newGeneration(msg.gen);
        anchored = false; // its state has not arrived yet
      }
    }
    msg.frames.forEach((frame, i) => {
      const seq = msg.seq + i;
      const key = this.kind === "live" ? seq : frame.tick;
      if (!this.buffer.push(key, frame)) return; // duplicate
      this.lastSeq = seq;
      this.ui.frame();
      this.utility.observe(key, frame);
      this.events.observeFrame(frame);
      if (this.live && frame.tick > this.last) this.last = frame.tick; // a live match grows
    });
    if (this.clock instanceof ArrivalClock && this.buffer.length) {
      this.clock.arrived(this.buffer.frames[this.buffer.length - 1].key);
    }
    if (anchored) this.buffer.dropBefore(this.clock.position() - this.keyRate);
    this.utility.prune(this.buffer.frames[0]?.key ?? 0, this.keyRate);
  }

  setStale(stale) {
    this.stale = Boolean(stale);
    this.ui.stale(this.stale);
  }

  /** Every few seconds: ``/streams`` says whether the feed is stale too (for clients that
   * missed the message) and how far a live match has grown; a live match's events so far. */
  async poll() {
    if (this.live) this.loadEvents();
    try {
      const entry = (await this.server.streams()).find((e) => e.id === this.id);
      if (this.client.closed || !entry) return;
      if (entry.stale !== undefined) this.setStale(entry.stale);
      // A paused DVR gets no frames: the match's growth comes from the list.
      if (this.live && entry.last_tick > this.last) this.last = entry.last_tick;
    } catch {
      // the connection state already says what is wrong
    }
  }
}
