// The side panels: score and clock, the kill feed, both teams (hp, armor, money, weapon in
// hand, inventory, bomb carrier) with a button to follow a player.
import { TEAM_COLOUR } from "./render.js";

const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
};

const formatClock = (seconds) => {
  const s = Math.max(0, seconds || 0);
  return `${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, "0")}`;
};

export class Panels {
  constructor(root, onFollow) {
    this.root = root;
    this.onFollow = onFollow;
  }

  update({ frame, players, roster, feed, score, followed, label }) {
    const $ = (id) => this.root.getElementById(id);
    $("tick-label").textContent = `tick ${frame.tick}`;
    const t = score?.t ?? frame.t_wins ?? 0;
    const ct = score?.ct ?? frame.ct_wins ?? 0;
    $("score").replaceChildren(
      el("span", { className: "t", textContent: `${frame.t || "T"} ${t}` }), " : ",
      el("span", { className: "ct", textContent: `${ct} ${frame.ct || "CT"}` }),
    );
    $("clock").textContent = `${formatClock(frame.round_time)}${frame.is_freeze ? " (freeze time)" : ""} · ${label}`;
    $("killfeed").replaceChildren(
      ...feed.map((k) => el("li", {
        textContent: `${k.killer || "world"} [${k.weapon}${k.is_hs ? " HS" : ""}] ${k.victim}`,
      })),
    );
    const carrier = frame.bomb?.carrier;
    const byName = new Map(players.map((p) => [p.name, p]));
    for (const team of ["T", "CT"]) {
      const names = [...new Set([
        ...roster.filter((r) => r.team === team).map((r) => r.name),
        ...players.filter((p) => p.team === team).map((p) => p.name),
      ])].sort();
      $(`team-${team}`).replaceChildren(...names.map((name) => this.row(name, byName.get(name), carrier, followed)));
    }
  }

  row(name, p, carrier, followed) {
    const follow = el("button", { type: "button", className: "follow", textContent: followed === name ? "◉" : "○", title: `follow ${name}` });
    follow.addEventListener("click", () => this.onFollow(followed === name ? null : name));
    const li = el("li", { className: p ? "" : "dead" });
    li.dataset.name = name;
    if (!p) {
      li.append(follow, el("span", { className: "name", textContent: name }));
      return li;
    }
    const items = (p.items || []).filter((item) => item !== p.actv_itm).join(", ");
    const hp = el("span", { className: "hpbar" });
    hp.style.setProperty("--hp", `${Math.max(0, p.hp ?? 0)}%`);
    hp.style.setProperty("--team", TEAM_COLOUR[p.team] || "#aaa");
    li.append(
      follow,
      el("span", { className: "name", textContent: `${name}${carrier === name ? " · C4" : ""}` }),
      el("span", { className: "stats", textContent: `${p.hp} hp · ${p.armor ?? 0}${p.helmet ? "+h" : ""} · $${p.money ?? 0}` }),
      hp,
      el("span", { className: "weapon", textContent: p.actv_itm || "" }),
      el("span", { className: "items", textContent: items }),
    );
    return li;
  }
}
