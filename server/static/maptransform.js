// Where things are on the map: the transform and backdrop images from the server's
// GET /maps/<map> (an overview or an occupancy raster), levels by height, and the view (whole
// map, or zoomed on a followed player) from radar pixels to canvas pixels. Drawing is render.js's.
// One MapView per map load: an answer for a map no longer wanted lands on a view nobody uses.

export const RADAR_SIZE = 1024;

export class MapView {
  constructor() {
    this.info = null; // the server's answer, once it came
    this.fitted = null; // a transform fitted to the first players, until (or without) an answer
    this.loading = false;
    this.images = new Map(); // level name -> HTMLImageElement (loaded)
    this.level = null; // level drawn; null = the first
    this.view = { cx: RADAR_SIZE / 2, cy: RADAR_SIZE / 2, zoom: 1 };
  }

  /** The transform in use: the server's, else the fitted one. */
  get transform() { return this.info ?? this.fitted; }
  get ready() { return this.transform !== null; }
  get levels() { return this.info?.levels || []; }
  get label() {
    if (this.info) return this.info.label || this.info.source;
    if (this.loading) return "loading the map backdrop (a plain grid until it arrives)";
    return this.fitted ? "no map from the server: grid only" : "no map";
  }

  /** Loads ``/maps/<map>`` and its images; false when the server has none. Players are drawn
   * on a fitted grid meanwhile (building an occupancy backdrop can take seconds). */
  async load(server, mapName) {
    let info;
    this.loading = true;
    try {
      info = await server.json(`/maps/${encodeURIComponent(mapName)}`);
    } catch {
      return false;
    } finally {
      this.loading = false;
    }
    this.info = info;
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

  /** Without the server's transform: a square around the first frame's players, 4x their spread. */
  fit(players) {
    if (this.transform || !players.length) return;
    const xs = players.map((p) => p.x);
    const ys = players.map((p) => p.y);
    const span = Math.max(2000, 4 * Math.max(Math.max(...xs) - Math.min(...xs), Math.max(...ys) - Math.min(...ys)));
    const cx = (Math.max(...xs) + Math.min(...xs)) / 2;
    const cy = (Math.max(...ys) + Math.min(...ys)) / 2;
    this.fitted = { source: "fitted", pos_x: cx - span / 2, pos_y: cy + span / 2, scale: span / RADAR_SIZE, levels: [] };
  }

  /** Game position -> radar pixel (0..1024) of the overview transform. */
  toRadar(x, y) {
    const { pos_x: px, pos_y: py, scale } = this.transform;
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
    return (units / this.transform.scale) * this.view.zoom * (size / RADAR_SIZE);
  }

  /** The level a height is on (the first level when none matches or there are none). */
  levelOf(z) {
    const levels = this.levels;
    const hit = levels.find((lv) => (lv.z_min ?? -Infinity) <= z && z < (lv.z_max ?? Infinity));
    return (hit || levels[0])?.name ?? null;
  }

  /** The backdrop image of the level shown, if loaded. */
  get image() { return this.images.get(this.level) ?? null; }

  follow(radarPos, zoom) {
    if (radarPos) this.view = { cx: radarPos[0], cy: radarPos[1], zoom };
    else this.view = { cx: RADAR_SIZE / 2, cy: RADAR_SIZE / 2, zoom: 1 };
  }
}
