// The seek bar: rounds, event markers, the position, click or drag to seek; on a live match
// (DVR) the range grows with the match and the end is the live edge.

export const MARKER_COLOUR = { kill: "#e8e8e8", plant: "#ff4040", defuse: "#40a0ff", explode: "#ffb000" };
/** Kills above, bomb events below: a kill and a plant on one tick both stay visible. */
export const markerRow = (type, height) => (type === "kill" ? [12, height / 2 + 6] : [height / 2 + 6, height]);

export class Timeline {
  constructor(canvas, onSeek) {
    this.canvas = canvas;
    this.onSeek = onSeek;
    this.first = 0;
    this.last = 1;
    this.dragging = false;
    canvas.addEventListener("pointerdown", (e) => {
      this.dragging = true;
      canvas.setPointerCapture(e.pointerId);
      this.preview = this.tickAt(e.clientX);
    });
    canvas.addEventListener("pointermove", (e) => {
      if (this.dragging) this.preview = this.tickAt(e.clientX);
    });
    canvas.addEventListener("pointerup", (e) => {
      if (!this.dragging) return;
      this.dragging = false;
      this.preview = null;
      this.onSeek(this.tickAt(e.clientX));
    });
    canvas.addEventListener("pointercancel", () => { // the browser took the pointer: no seek
      this.dragging = false;
      this.preview = null;
    });
  }

  setRange(first, last) {
    this.first = first;
    this.last = Math.max(first + 1, last);
  }

  tickAt(clientX) {
    const rect = this.canvas.getBoundingClientRect();
    const frac = Math.min(1, Math.max(0, (clientX - rect.left) / rect.width));
    return Math.round(this.first + frac * (this.last - this.first));
  }

  /** Canvas x of a tick (markers are drawn here; tests read pixels here). */
  xOf(tick) {
    return ((tick - this.first) / (this.last - this.first)) * this.canvas.width;
  }

  draw({ tick, rounds, markers, liveEdge }) {
    const g = this.canvas.getContext("2d");
    const { width, height } = this.canvas;
    const shown = this.preview ?? tick;
    g.fillStyle = "#2a2e33";
    g.fillRect(0, 0, width, height);
    g.fillStyle = "#3d5a80";
    g.fillRect(0, 10, this.xOf(shown), height - 20);
    g.fillStyle = "#888";
    g.font = "10px system-ui, sans-serif";
    rounds.forEach((start, i) => {
      const x = this.xOf(start);
      g.fillRect(Math.floor(x), 0, 1, height);
      g.fillText(`R${i + 1}`, x + 2, 9);
    });
    for (const marker of markers) {
      const [top, bottom] = markerRow(marker.type, height);
      g.fillStyle = MARKER_COLOUR[marker.type];
      g.fillRect(Math.floor(this.xOf(marker.tick)) - 1, top, 3, bottom - top);
    }
    if (liveEdge !== undefined) {
      g.fillStyle = liveEdge ? "#e33" : "#733";
      g.fillRect(width - 4, 0, 4, height);
    }
    g.fillStyle = "#fff";
    g.fillRect(this.xOf(shown) - 1, 0, 3, 10);
  }
}
