// Colours the canvases share with the page's CSS: the custom properties in radar.css (:root)
// are the one source, read here once for drawing.

const css = getComputedStyle(document.documentElement);
const property = (name) => css.getPropertyValue(name).trim() || "#aaa";

export const TEAM_COLOUR = { T: property("--t"), CT: property("--ct") };
