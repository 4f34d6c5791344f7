// The side panels: score and round clock, the kill feed, both teams (hp, armor, money, weapon in
// hand, inventory, bomb carrier) with a button to follow a player. Rows are kept per player and
// updated in place: a click that takes longer than one update still lands on its button.
import { $, el, setText } from "./dom.js";

const formatClock = (seconds) => {
  const s = Math.max(0, seconds);
  return `${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, "0")}`;
};

/** "killer [weapon HS] victim" (no brackets when the feed names no weapon and no headshot). */
export function killText(k) {
  const tags = [k.weapon, k.is_hs ? "HS" : ""].filter(Boolean).join(" ");
  return `${k.killer || "world"} ${tags ? `[${tags}]` : "→"} ${k.victim}`;
}

/** The round clock line: "round 5 · 0:42", with freeze time and a finished round said so
 * (the round number from the score: rounds won so far, plus the one being played). */
export function clockText(frame, clock, kind) {
  const round = (frame.t_wins ?? 0) + (frame.ct_wins ?? 0) + (clock?.over ? 0 : 1);
  if (!clock) return `round ${round} (started before ${kind === "live" ? "you joined" : "the recording"})`;
  const state = clock.freeze ? " (freeze time)" : clock.over ? " (round over)" : "";
  return `round ${round} · ${formatClock(clock.seconds)}${state}`;
}

class PlayerRow {
  constructor(name, onFollow) {
    this.follow = el("button", { type: "button", className: "follow", title: `follow ${name}` });
    this.follow.addEventListener("click", () => onFollow(name));
    this.name = el("span", { className: "name" });
    this.stats = el("span", { className: "stats" });
    this.hp = el("span", { className: "hpbar" });
    this.weapon = el("span", { className: "weapon" });
    this.items = el("span", { className: "items" });
    this.li = el("li", {}, this.follow, this.name, this.stats, this.hp, this.weapon, this.items);
    this.li.dataset.name = name;
  }

  fill(name, p, carrier, followed) {
    setText(this.follow, followed === name ? "◉" : "○");
    this.li.classList.toggle("dead", !p);
    for (const part of [this.stats, this.hp, this.weapon, this.items]) part.hidden = !p;
    setText(this.name, `${name}${p && carrier === name ? " · C4" : ""}`);
    if (!p) return;
    setText(this.stats, `${p.hp} hp · ${p.armor ?? 0}${p.helmet ? "+h" : ""} · $${p.money ?? 0}`);
    const hp = `${Math.max(0, p.hp ?? 0)}%`;
    if (this.hp.style.getPropertyValue("--hp") !== hp) this.hp.style.setProperty("--hp", hp);
    setText(this.weapon, p.actv_itm || "");
    setText(this.items, (p.items || []).filter((item) => item !== p.actv_itm).join(", "));
  }
}

export class Panels {
  constructor(onFollow) {
    this.onFollow = onFollow;
    this.reset();
  }

  /** A new stream: forget its players. */
  reset() {
    this.rows = new Map(); // player name -> PlayerRow
    this.teamOf = new Map(); // player name -> the team last seen on (sides switch at halftime)
    this.feedShown = null;
  }

  update({ frame, players, roster, feed, followed, clock, kind, label }) {
    setText($("tick-label"), `tick ${frame.tick}`);
    this.score(frame);
    setText($("clock"), `${clockText(frame, clock, kind)} · ${label}`);
    const feedTexts = feed.map(killText);
    if (feedTexts.join("\n") !== this.feedShown) {
      this.feedShown = feedTexts.join("\n");
      $("killfeed").replaceChildren(...feedTexts.map((text) => el("li", { textContent: text })));
    }
    const carrier = frame.bomb?.carrier;
    const byName = new Map(players.map((p) => [p.name, p]));
    for (const r of roster) if (!this.teamOf.has(r.name)) this.teamOf.set(r.name, r.team);
    for (const p of players) this.teamOf.set(p.name, p.team);
    for (const team of ["T", "CT"]) {
      const names = [...this.teamOf].filter(([, t]) => t === team).map(([name]) => name).sort();
      const rows = names.map((name) => this.row(name));
      rows.forEach((row, i) => row.fill(names[i], byName.get(names[i]), carrier, followed));
      const list = $(`team-${team}`);
      const same = list.children.length === rows.length && rows.every((row, i) => list.children[i] === row.li);
      if (!same) list.replaceChildren(...rows.map((row) => row.li));
    }
  }

  /** The score of the frame shown: its per-side wins are right after any seek and across the
   * halftime side switch (the events index keeps per-side totals of each round end). */
  score(frame) {
    const root = $("score");
    if (!root.querySelector(".t")) root.replaceChildren(el("span", { className: "t" }), " : ", el("span", { className: "ct" }));
    setText(root.querySelector(".t"), `${frame.t || "T"} ${frame.t_wins ?? 0}`);
    setText(root.querySelector(".ct"), `${frame.ct_wins ?? 0} ${frame.ct || "CT"}`);
  }

  row(name) {
    let row = this.rows.get(name);
    if (!row) this.rows.set(name, (row = new PlayerRow(name, this.onFollow)));
    return row;
  }
}
