// Keyboard shortcuts of the replay controls: space play/pause, arrows -/+5 s, [ ] previous
// and next round, 1-8 the speeds in order, L back to the live edge.

export function bindKeys(target, actions, speeds) {
  target.addEventListener("keydown", (e) => {
    if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement) return;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const digit = Number(e.key);
    if (Number.isInteger(digit) && digit >= 1 && digit <= speeds.length) {
      actions.speed(speeds[digit - 1]);
    } else if (e.key === " ") {
      actions.toggle();
    } else if (e.key === "ArrowLeft" || e.key === "ArrowRight") {
      actions.jumpSeconds(e.key === "ArrowLeft" ? -5 : 5);
    } else if (e.key === "[" || e.key === "]") {
      actions.round(e.key === "[" ? -1 : 1);
    } else if (e.key === "l" || e.key === "L") {
      actions.goLive();
    } else {
      return;
    }
    e.preventDefault(); // space would scroll (or press a focused button), arrows would move
    if (e.target instanceof HTMLButtonElement) e.target.blur();
  });
}
