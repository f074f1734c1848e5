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
  if (all) all.addEventListener("change", () => { rows().forEach((r) => { r.checked = all.checked; }); updateSelection(); });
  document.addEventListener("change", (event) => { if (event.target.classList?.contains("row-select")) updateSelection(); });

  // -- kanban: a card dropped in another column takes the workflow transition ---------------------------
  const board = document.querySelector(".kanban");
  if (board && board.dataset.canMove === "true") {
    const alertBox = document.getElementById("kanban-alert");
    let dragged = null;
    board.addEventListener("dragstart", (event) => {
      dragged = event.target.closest(".kanban-card");
      if (dragged) event.dataTransfer.setData("text/plain", dragged.dataset.id);
    });
    board.querySelectorAll(".kanban-lane").forEach((lane) => {
      lane.addEventListener("dragover", (event) => { event.preventDefault(); lane.classList.add("drop-target"); });
      lane.addEventListener("dragleave", () => lane.classList.remove("drop-target"));
      lane.addEventListener("drop", async (event) => {
        event.preventDefault();
        lane.classList.remove("drop-target");
        const card = dragged;
        dragged = null;
        if (!card || card.closest(".kanban-lane") === lane) return;
        const from = card.closest(".kanban-lane");
        const answer = await postJson(`${board.dataset.moveUrl}/${card.dataset.id}/_move`,
                                      { to: lane.dataset.value, version: parseInt(card.dataset.version, 10) });
        if (answer.ok) {
          card.dataset.version = answer.data.version;
          lane.querySelector(".kanban-cards").prepend(card);
          [from, lane].forEach((l) => {
            const badge = l.querySelector(".lane-count");
            badge.textContent = String(parseInt(badge.textContent, 10) + (l === lane ? 1 : -1));
          });
          alertBox.classList.add("d-none");
        } else {
          alertBox.textContent = answer.data.error || `Refused (${answer.status})`;
          alertBox.classList.remove("d-none");
          card.classList.add("border-danger");
          setTimeout(() => card.classList.remove("border-danger"), 1500);
        }
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
