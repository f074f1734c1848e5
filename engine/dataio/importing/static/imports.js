// The import page while its job runs: polls the job's status (a small JSON answer) every second,
// shows rows done, rate and time left, and reloads the page once the job has ended (the result is
// drawn by the server). Answers are written as text, never as HTML.
(() => {
  "use strict";
  const box = document.getElementById("progress");
  if (!box) return;
  const set = (id, text) => { const el = document.getElementById(id); if (el) el.textContent = text; };
  const bar = document.getElementById("progress-bar");
  const tick = async () => {
    let state;
    try {
      const answer = await fetch(box.dataset.statusUrl, { credentials: "same-origin", headers: { Accept: "application/json" } });
      const json = (answer.headers.get("content-type") || "").includes("json");
      if (!answer.ok || !json) return;      // signed out (the login page) or no longer allowed: stop polling
      state = await answer.json();
    } catch (err) {
      window.setTimeout(tick, 3000);        // the server is restarting: try again a little later
      return;
    }
    if (!state.running) { window.location.reload(); return; }
    set("job-status", state.label);
    set("rows-done", state.rows_done.toLocaleString());
    set("rows-total", state.rows_total === null ? "?" : state.rows_total.toLocaleString());
    set("rate", state.rate === null ? "—" : state.rate.toLocaleString());
    set("time-left", state.seconds_left === null ? "—" : `${Math.ceil(state.seconds_left)} s`);
    if (bar) {
      bar.style.width = `${state.percent}%`;
      bar.parentElement.setAttribute("aria-valuenow", String(state.percent));
    }
    window.setTimeout(tick, 1000);
  };
  window.setTimeout(tick, 500);
})();
