// The map under the players: the transform and backdrop images from the server's
// GET /maps/<map> (an overview or an occupancy raster), levels by height, and the view
// (whole map, or zoomed on a followed player) from radar pixels to canvas pixels.

export const RADAR_SIZE = 1024;

export class MapView {
  constructor() {
    this.info = null; // the server's answer
    this.images = new Map(); // level name -> HTMLImageElement (loaded)
    this.level = null; // level drawn; null = the first
    this.fitted = false; // no map from the server: a transform fitted to the first players
    this.view = { cx: RADAR_SIZE / 2, cy: RADAR_SIZE / 2, zoom: 1 };
  }

  get ready() { return this.info !== null; }
  get levels() { return this.info?.levels || []; }
  get label() {
    if (!this.info) return "no map";
    return this.fitted ? "no map from the server: grid only" : this.info.label || this.info.source;
  }

  /** Loads ``/maps/<map>`` and its images; false when the server has none. */
  async load(server, mapName) {
    let info;
    try {
      info = await server.json(`/maps/${encodeURIComponent(mapName)}`);
    } catch {
      return false;
    }
    this.info = info;
    this.fitted = false;
    this.level = info.levels?.[0]?.name ?? null;
    await Promise.all((info.levels || []).map((level) => this.loadImage(server, level)));
    return true;
  }

  async loadImage(server, level) {
    const img = new Image();
    img.crossOrigin = "anonymous"; // keeps the canvas readable (the server sends CORS headers)
    img.src = server.url(level.image).href;
    try {
      await img.decode();
      this.images.set(level.name, img);
    } catch {
      // a missing level image: that level is drawn without a backdrop
    }
  }

  /** No map from the server: a square around the first frame's players, 4x their spread. */
  fit(players) {
    if (this.info || !players.length) return;
    const xs = players.map((p) => p.x);
    const ys = players.map((p) => p.y);
    const span = Math.max(2000, 4 * Math.max(Math.max(...xs) - Math.min(...xs), Math.max(...ys) - Math.min(...ys)));
    const cx = (Math.max(...xs) + Math.min(...xs)) / 2;
    const cy = (Math.max(...ys) + Math.min(...ys)) / 2;
    this.info = { source: "fitted", pos_x: cx - span / 2, pos_y: cy + span / 2, scale: span / RADAR_SIZE, levels: [] };
    this.fitted = true;
  }

  /** Game position -> radar pixel (0..1024) of the overview transform. */
  toRadar(x, y) {
    const { pos_x: px, pos_y: py, scale } = this.info;
    return [(x - px) / scale, (py - y) / scale];
  }

  /** Radar pixel -> canvas pixel under the current view. */
  toCanvas([rx, ry], size) {
    const { cx, cy, zoom } = this.view;
    const k = size / RADAR_SIZE;
    return [((rx - cx) * zoom + RADAR_SIZE / 2) * k, ((ry - cy) * zoom + RADAR_SIZE / 2) * k];
  }

  /** Game units -> canvas pixels (radii). */
  length(units, size) {
    return (units / this.info.scale) * this.view.zoom * (size / RADAR_SIZE);
  }

  /** The level a height is on (the first level when none matches or there are none). */
  levelOf(z) {
    const levels = this.levels;
    const hit = levels.find((lv) => (lv.z_min ?? -Infinity) <= z && z < (lv.z_max ?? Infinity));
    return (hit || levels[0])?.name ?? null;
  }

  follow(radarPos, zoom) {
    if (radarPos) this.view = { cx: radarPos[0], cy: radarPos[1], zoom };
    else this.view = { cx: RADAR_SIZE / 2, cy: RADAR_SIZE / 2, zoom: 1 };
  }

  drawBackdrop(ctx, size) {
    ctx.fillStyle = "#1c1f22";
    ctx.fillRect(0, 0, size, size);
    const [x0, y0] = this.toCanvas([0, 0], size);
    const [x1, y1] = this.toCanvas([RADAR_SIZE, RADAR_SIZE], size);
    const img = this.images.get(this.level);
    if (img) ctx.drawImage(img, x0, y0, x1 - x0, y1 - y0);
    else this.drawGrid(ctx, x0, y0, x1, y1);
  }

  drawGrid(ctx, x0, y0, x1, y1) {
    ctx.strokeStyle = "#2a2e33";
    ctx.lineWidth = 1;
    const step = (x1 - x0) / 16;
    for (let i = 0; i <= 16; i++) {
      ctx.beginPath(); ctx.moveTo(x0 + i * step, y0); ctx.lineTo(x0 + i * step, y1); ctx.stroke();
      ctx.beginPath(); ctx.moveTo(x0, y0 + i * step); ctx.lineTo(x1, y0 + i * step); ctx.stroke();
    }
  }
}
