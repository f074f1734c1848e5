/* The live parts of the server-rendered UI: conditional fields while typing, lookup type-ahead,
   list selection and bulk actions, kanban drag and drop. Every call sends the session's CSRF token;
   every answer is rendered as text (never as HTML). */
(function () {
  "use strict";
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";

  // The browser's time zone, for the server to show and read date-times in (UTC until it knows).
  try {
    const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (zone && !document.cookie.split("; ").includes(`tz=${encodeURIComponent(zone)}`)) {
      document.cookie = `tz=${encodeURIComponent(zone)}; path=/; SameSite=Lax; max-age=31536000`;
    }
  } catch (e) { /* no Intl: date-times stay in UTC */ }

  function debounce(fn, ms) {
    let timer;
    return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
  }

  async function postJson(url, body) {
    const response = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf, "Accept": "application/json" },
      body: JSON.stringify(body),
    });
    let data = {};
    try { data = await response.json(); } catch (e) { /* an empty or non-JSON answer */ }
    return { ok: response.ok, status: response.status, data };
  }

  // -- confirmation on destructive buttons -------------------------------------------------------
  document.addEventListener("click", (event) => {
    const button = event.target.closest("[data-confirm]");
    if (button && !window.confirm(button.dataset.confirm)) event.preventDefault();
  });

  // -- record forms: visible_when / required_when / readonly_when, evaluated by the server ----------
  document.querySelectorAll("form.record-form").forEach((form) => {
    const values = () => {
      const out = {};
      form.querySelectorAll("[name]").forEach((el) => {
        const name = el.name;
        if (name === "csrf_token" || name === "version" || name.startsWith("_")) return;
        if (el.type === "checkbox") out[name] = el.checked;
        else if (el.multiple) out[name] = Array.from(el.selectedOptions).map((o) => o.value);
        else out[name] = el.value === "" ? null : el.value;
      });
      return out;
    };
    const apply = (state) => {
      Object.entries(state.visible || {}).forEach(([name, on]) => {
        form.querySelector(`[data-field="${name}"]`)?.classList.toggle("d-none", !on);
      });
      Object.entries(state.required || {}).forEach(([name, on]) => {
        form.querySelector(`[data-field="${name}"] .required-mark`)?.classList.toggle("d-none", !on);
      });
      Object.entries(state.readonly || {}).forEach(([name, on]) => {
        form.querySelectorAll(`[data-field="${name}"] input, [data-field="${name}"] textarea`).forEach((el) => {
          if (el.type !== "hidden") el.readOnly = on;
        });
      });
    };
    const refresh = debounce(async () => {
      const id = parseInt(form.dataset.id, 10);
      const answer = await postJson(form.dataset.stateUrl, { id: Number.isNaN(id) ? null : id, values: values() });
      if (answer.ok) apply(answer.data);
    }, 120);
    form.addEventListener("input", refresh);
    form.addEventListener("change", refresh);
  });

  // -- lookup fields: type-ahead over the target entity -----------------------------------------------
  document.querySelectorAll(".lookup").forEach((box) => {
    const search = box.querySelector(".lookup-search");
    const hidden = box.querySelector(".lookup-value");
    const results = box.querySelector(".lookup-results");
    if (search.readOnly) return;
    const show = (items) => {
      results.replaceChildren();
      items.forEach((item) => {
        const option = document.createElement("button");
        option.type = "button";
        option.className = "list-group-item list-group-item-action lookup-option";
        option.textContent = item.title;
        option.addEventListener("click", () => {
          hidden.value = item.id;
          search.value = item.title;
          results.classList.add("d-none");
          hidden.dispatchEvent(new Event("change", { bubbles: true }));
        });
        results.appendChild(option);
      });
      results.classList.toggle("d-none", items.length === 0);
    };
    const lookup = debounce(async () => {
      const q = search.value.trim();
      if (q === "") { hidden.value = ""; show([]); return; }
      const response = await fetch(`/ui/${box.dataset.target}/_lookup?q=${encodeURIComponent(q)}`,
                                   { credentials: "same-origin", headers: { "Accept": "application/json" } });
      if (response.ok) show(await response.json());
    }, 150);
    search.addEventListener("input", () => { hidden.value = ""; lookup(); });
    search.addEventListener("focus", lookup);
    document.addEventListener("click", (event) => { if (!box.contains(event.target)) results.classList.add("d-none"); });
  });

  // -- lists: selection, bulk actions, export of the selection -----------------------------------------
  const all = document.getElementById("select-all");
  const rows = () => Array.from(document.querySelectorAll(".row-select"));
  const updateSelection = () => {
    const chosen = rows().filter((r) => r.checked).map((r) => r.value);
    const count = document.getElementById("selected-count");
    if (count) count.textContent = String(chosen.length);
    const exportLink = document.getElementById("export-selected");
    if (exportLink) {
      const url = new URL(exportLink.dataset.base, window.location.origin);
      if (chosen.length) url.searchParams.set("id[in]", chosen.join(","));
      exportLink.href = url.pathname + url.search;
    }
  };
  // the bulk bar shows only while rows are chosen; its confirmations say how many records change
  const bulkBar = document.getElementById("bulk-bar");
  const bulkField = document.getElementById("bulk-field");
  const bulkValue = document.getElementById("bulk-value");
  const syncBulk = () => {
    const n = rows().filter((r) => r.checked).length;
    if (bulkBar) bulkBar.hidden = n === 0;
    document.querySelectorAll("[data-confirm-count]").forEach((button) => {
      const label = bulkField && bulkField.selectedIndex > 0 ? bulkField.options[bulkField.selectedIndex].text : "";
      button.dataset.confirm = button.dataset.confirmCount.replace("{n}", String(n))
        .replace("{field}", label).replace("{value}", bulkValue ? bulkValue.value : "");
    });
    if (bulkField && bulkValue) {
      const chosen = bulkField.options[bulkField.selectedIndex];
      bulkValue.type = chosen && chosen.dataset.kind === "date" ? "date" : "text";
      if (chosen && chosen.dataset.list) bulkValue.setAttribute("list", chosen.dataset.list); else bulkValue.removeAttribute("list");
      const update = document.getElementById("bulk-update");
      if (update) update.disabled = !chosen || !chosen.value;
    }
  };
  if (all) all.addEventListener("change", () => { rows().forEach((r) => { r.checked = all.checked; }); updateSelection(); syncBulk(); });
  document.addEventListener("change", (event) => { if (event.target.classList?.contains("row-select")) { updateSelection(); syncBulk(); } });
  [bulkField, bulkValue].forEach((el) => el && ["change", "input"].forEach((t) => el.addEventListener(t, syncBulk)));
  if (bulkBar) syncBulk();

  // the filter builder: the value box offers the field's option labels, a date picker, or the titles
  // of the records a lookup may point at (read from the type-ahead endpoint, as the user may see them)
  const filtersToggle = document.getElementById("filters-toggle");
  if (filtersToggle) filtersToggle.addEventListener("click", () => {
    const box = document.getElementById("list-controls");
    box.classList.toggle("show");
    filtersToggle.setAttribute("aria-expanded", String(box.classList.contains("show")));
  });
  document.querySelectorAll(".filter-row").forEach((row) => {
    const field = row.querySelector('select[name="ff"]');
    const op = row.querySelector('select[name="fo"]');
    const value = row.querySelector(".filter-value");
    const sync = () => {
      const chosen = field.options[field.selectedIndex];
      const kind = chosen?.dataset.kind || "";
      value.type = kind === "date" ? "date" : "text";
      if (chosen?.dataset.list) value.setAttribute("list", chosen.dataset.list);
      else if (chosen?.dataset.lookup) value.setAttribute("list", "lookup-titles");
      else value.removeAttribute("list");
      const ops = (chosen?.dataset.ops || "").split(",");
      Array.from(op.options).forEach((o) => { o.hidden = Boolean(chosen?.value) && !ops.includes(o.value); });
      if (op.selectedOptions[0]?.hidden) op.value = ops[0];
    };
    const titles = debounce(async () => {
      const chosen = field.options[field.selectedIndex];
      if (!chosen?.dataset.lookup || value.value.trim().length < 1) return;
      const response = await fetch(`${chosen.dataset.lookup}?q=${encodeURIComponent(value.value.trim())}`,
                                   { credentials: "same-origin", headers: { "Accept": "application/json" } });
      if (!response.ok) return;
      const list = document.getElementById("lookup-titles");
      list.replaceChildren(...(await response.json()).map((r) => { const o = document.createElement("option"); o.value = r.title; return o; }));
    }, 200);
    field.addEventListener("change", sync);
    value.addEventListener("input", titles);
    sync();
  });

  // -- kanban: a card dropped in another column (or sent there with its "Move to" menu on touch
  // screens) takes the workflow transition; a refusal is shown on the card itself ------------------
  const board = document.querySelector(".kanban");
  if (board && board.dataset.canMove === "true") {
    let dragged = null;
    const moveCard = async (card, lane) => {
      const from = card.closest(".kanban-lane");
      if (!lane || from === lane) return;
      const note = card.querySelector(".kanban-refusal");
      const answer = await postJson(`${board.dataset.moveUrl}/${card.dataset.id}/_move`,
                                    { to: lane.dataset.value, version: parseInt(card.dataset.version, 10) });
      if (answer.ok) {
        card.dataset.version = answer.data.version;
        lane.querySelector(".kanban-cards").prepend(card);
        [from, lane].forEach((l) => {
          const badge = l.querySelector(".lane-count");
          badge.textContent = String(parseInt(badge.textContent, 10) + (l === lane ? 1 : -1));
        });
        note.classList.add("d-none");
        card.classList.remove("border-danger");
        const menu = card.querySelector(".kanban-move");
        if (menu) menu.value = lane.dataset.value;
      } else {
        note.textContent = answer.data.error || `Refused (${answer.status})`;
        note.classList.remove("d-none");
        card.classList.add("border-danger");
        const menu = card.querySelector(".kanban-move");
        if (menu) menu.value = from.dataset.value;
        card.scrollIntoView({ block: "nearest" });
      }
    };
    board.addEventListener("dragstart", (event) => {
      dragged = event.target.closest(".kanban-card");
      if (dragged) event.dataTransfer.setData("text/plain", dragged.dataset.id);
    });
    board.addEventListener("change", (event) => {
      if (!event.target.classList.contains("kanban-move")) return;
      const lane = Array.from(board.querySelectorAll(".kanban-lane")).find((l) => l.dataset.value === event.target.value);
      moveCard(event.target.closest(".kanban-card"), lane);
    });
    board.querySelectorAll(".kanban-lane").forEach((lane) => {
      lane.addEventListener("dragover", (event) => { event.preventDefault(); lane.classList.add("drop-target"); });
      lane.addEventListener("dragleave", () => lane.classList.remove("drop-target"));
      lane.addEventListener("drop", async (event) => {
        event.preventDefault();
        lane.classList.remove("drop-target");
        const card = dragged;
        dragged = null;
        if (card) moveCard(card, lane);
      });
    });
  }

  // -- a block shown only while a group of radio buttons has one value (data-show-when-name/-value):
  // the convert screen's values of a new record, hidden while an existing record is chosen ----------
  const syncShown = () => document.querySelectorAll("[data-show-when-name]").forEach((block) => {
    const picked = document.querySelector(`input[type=radio][name="${CSS.escape(block.dataset.showWhenName)}"]:checked`);
    block.hidden = Boolean(picked) && picked.value !== block.dataset.showWhenValue;
  });
  document.addEventListener("change", (event) => { if (event.target.type === "radio") syncShown(); });
  syncShown();

  // -- a table wider than its box scrolls: keyboard users reach it with Tab (and screen readers hear
  // what it is), on every screen and after every htmx swap ------------------------------------------
  const reachable = (root) => root.querySelectorAll(".table-responsive, .kanban, [data-scrolls]").forEach((box) => {
    if (box.scrollWidth > box.clientWidth && !box.hasAttribute("tabindex")) {
      box.tabIndex = 0;
      box.setAttribute("role", "region");
      const caption = box.closest(".card")?.querySelector(".card-header, h2, h3");
      box.setAttribute("aria-label", (caption?.textContent || document.title).trim());
    }
  });
  reachable(document);
  document.body.addEventListener("htmx:afterSwap", (event) => reachable(event.target));
  window.addEventListener("resize", () => reachable(document));
})();

// -- the agenda's calendar (engine/agenda): an event dropped on another day posts its "Move to" form
// with that day (the form htmx sends; without scripts the form works alone) --------------------------
(() => {
  let dragged = null;
  document.addEventListener("dragstart", (event) => {
    dragged = event.target.closest?.(".cal-event[draggable=true]") || null;
    if (dragged) { event.dataTransfer.setData("text/plain", dragged.dataset.id); event.dataTransfer.effectAllowed = "move"; }
  });
  document.addEventListener("dragover", (event) => {
    const day = dragged && event.target.closest?.(".cal-day");
    if (day) { event.preventDefault(); day.classList.add("drop-target"); }
  });
  document.addEventListener("dragleave", (event) => {
    const day = event.target.closest?.(".cal-day");
    if (day && !day.contains(event.relatedTarget)) day.classList.remove("drop-target");
  });
  document.addEventListener("drop", (event) => {
    const day = event.target.closest?.(".cal-day");
    const card = dragged;
    dragged = null;
    if (!day || !card) return;
    event.preventDefault();
    day.classList.remove("drop-target");
    if (card.closest(".cal-day") === day) return;
    const form = card.querySelector(".cal-move form");
    form.querySelector("input[name=date]").value = day.dataset.date;
    form.requestSubmit();
  });
})();
// The record page: htmx requests send the CSRF token of the page's meta tag as it is now (signing in
// again in another tab after the session ended refreshes it there, so nothing typed is lost).
document.body.addEventListener("htmx:configRequest", (event) => {
  const token = document.querySelector('meta[name="csrf-token"]')?.content;
  if (token) event.detail.headers["X-CSRF-Token"] = token;
});
