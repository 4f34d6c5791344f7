// The list beside the radar: live streams (GET /streams) and recordings (GET /recordings), a
// button for each; a live match (not a recording played live) also gets a DVR button.
import { $, el, item } from "./dom.js";

function button(text, kind, id, onPick) {
  const b = el("button", { type: "button", textContent: text });
  b.dataset.kind = kind;
  b.dataset.id = id;
  b.addEventListener("click", () => onPick(kind, id));
  return b;
}

/** Fills both lists; errors are shown under them. ``onPick(kind, id)`` opens one. */
export async function listAll(server, onPick) {
  const errors = [];
  try {
    const streams = await server.streams();
    $("streams").replaceChildren(...streams.map((s) => item(
      button(`${s.id} (${s.map}, ${s.subscribers} watching${s.stale ? ", stale" : ""})`, "live", s.id, onPick),
      ...(s.source && s.source !== "recording" ? [button("DVR", "replay", s.id, onPick)] : []),
    )));
  } catch (err) {
    errors.push(err.message);
  }
  try {
    const { recordings } = await server.json("/recordings");
    $("recordings").replaceChildren(...recordings.map((r) => item(
      button(`${r.id} (${Math.round(r.duration_s)} s)`, "replay", r.id, onPick),
    )));
  } catch (err) {
    errors.push(err.message);
  }
  $("list-error").textContent = errors.join("; ");
}

/** Marks the button of what is being watched. */
export function markActive(kind, id) {
  for (const b of document.querySelectorAll("nav button")) {
    b.classList.toggle("active", b.dataset.kind === kind && b.dataset.id === id);
  }
}
