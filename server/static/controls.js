// The replay controls under the radar: play/pause, speed, previous/next round, back to a live
// match's edge, the level switch, and their keyboard shortcuts (keyboard.js).
import { $ } from "./dom.js";
import { roundTarget } from "./events.js";
import { bindKeys } from "./keyboard.js";

export const SPEEDS = [0.25, 0.5, 1, 1.25, 1.5, 2, 4, 8];

export class Controls {
  /**
   * @param {() => import("./session.js").Session | null} getSession  what is being watched
   * @param {() => number | undefined} shownTick  the tick of the frame on screen
   */
  constructor(getSession, shownTick) {
    this.getSession = getSession;
    this.shownTick = shownTick;
    this.levelChoice = "auto"; // a level name, or "auto": the level of the height in view
    $("speed").replaceChildren(...SPEEDS.map((v) => new Option(`${v}x`, String(v), false, v === 1)));
    $("play").addEventListener("click", () => this.togglePlay());
    $("prev-round").addEventListener("click", () => this.toRound(-1));
    $("next-round").addEventListener("click", () => this.toRound(1));
    $("go-live").addEventListener("click", () => this.goLive());
    // A dropdown picked with the mouse keeps the focus and would take the shortcut keys.
    $("speed").addEventListener("change", (e) => {
      this.setSpeed(Number(e.target.value));
      e.target.blur();
    });
    $("level").addEventListener("change", (e) => {
      this.levelChoice = e.target.value;
      e.target.blur();
    });
    bindKeys(document, {
      speed: (value) => this.setSpeed(value),
      toggle: () => this.togglePlay(),
      jumpSeconds: (seconds) => this.jumpSeconds(seconds),
      round: (direction) => this.toRound(direction),
      goLive: () => this.goLive(),
    }, SPEEDS);
  }

  /** The speed picked (a new session starts at it). */
  get speed() { return Number($("speed").value); }

  send(message) { this.getSession()?.send(message); }

  /** Where playback is going: the last seek asked for, else the frame on screen. */
  currentTick() { return this.getSession()?.targetTick(this.shownTick()) ?? 0; }

  setSpeed(value) {
    $("speed").value = String(value);
    this.send({ type: "speed", value });
  }

  togglePlay() { this.send({ type: this.getSession()?.clock.playing ? "pause" : "play" }); }

  jumpSeconds(seconds) {
    const s = this.getSession();
    s?.seek(this.currentTick() + seconds * s.tickrate);
  }

  toRound(direction) {
    const s = this.getSession();
    if (s?.kind !== "replay") return;
    const target = roundTarget(s.roundStarts(), this.currentTick(), direction, s.tickrate);
    if (target !== null) s.seek(target);
  }

  /** To the newest frame: seek there and play at 2x, since the edge moves on meanwhile; back
   * to 1x once the server says we are holding at the edge (``showState``). */
  goLive() {
    const s = this.getSession();
    if (!s?.live) return;
    s.seek(s.last);
    s.catchingUp = true;
    this.setSpeed(2);
    this.send({ type: "play" });
  }

  /** A new session: replay controls for replays, the live button for a live match's DVR. */
  showSession(kind) {
    $("replay-controls").hidden = kind !== "replay";
    $("go-live").hidden = true;
  }

  /** The session's state changed: the play button, the live edge. */
  showState(s) {
    $("play").textContent = s.clock.playing ? "pause" : "play";
    $("go-live").hidden = !s.live;
    $("go-live").dataset.edge = String(Boolean(s.liveEdge));
    if (s.liveEdge && s.catchingUp) {
      s.catchingUp = false;
      this.setSpeed(1);
    }
  }

  /** A map's levels (a switch only when there are several); back to choosing by height. */
  showLevels(levels) {
    $("level-switch").hidden = levels.length < 2;
    $("level").replaceChildren(new Option("auto (height)", "auto"), ...levels.map((lv) => new Option(lv.name, lv.name)));
    this.levelChoice = "auto";
  }
}
