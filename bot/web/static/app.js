// Caveat dashboard: progressive enhancement only; every page also works as plain forms and links.
"use strict";

function csrf() {
  const m = document.querySelector('meta[name="csrf-token"]');
  return m ? m.content : "";
}

function typing(ev) {
  const t = ev.target;
  return t && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName));
}

// Sandbox: post with fetch and show Caveat's reply under the post without reloading.
function setupSandbox() {
  const form = document.getElementById("composer");
  if (!form) return;
  const feed = document.getElementById("feed");
  const err = document.getElementById("post-error");
  const member = document.getElementById("member");
  const text = document.getElementById("text");
  const saved = localStorage.getItem("caveat.member");
  if (saved && member.value === "member") member.value = saved;
  if (feed.lastElementChild) feed.lastElementChild.scrollIntoView({block: "end"});
  text.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); form.requestSubmit(); }
  });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const button = document.getElementById("send");
    button.disabled = true;
    err.hidden = true;
    try {
      const res = await fetch(form.action, {
        method: "POST", body: new URLSearchParams(new FormData(form)),
        headers: {"Accept": "application/json", "X-CSRF-Token": csrf()}, credentials: "same-origin",
      });
      const data = await res.json().catch(() => ({error: "The server answered " + res.status + "."}));
      if (!res.ok) { err.textContent = data.error || ("Refused (" + res.status + ")."); err.hidden = false; return; }
      const empty = feed.querySelector(".empty");
      if (empty) empty.remove();
      feed.insertAdjacentHTML("beforeend", data.html);
      feed.lastElementChild.scrollIntoView({block: "end"});
      localStorage.setItem("caveat.member", member.value);
      text.value = "";
      const count = document.getElementById("open-count");
      if (count && data.case_id) count.textContent = String(Number(count.textContent) + 1);
    } catch (e) {
      err.textContent = "Could not reach Caveat: " + e.message; err.hidden = false;
    } finally {
      button.disabled = false;
      text.focus();
    }
  });
}

// Thresholds: keep slider and number in step, and re-run the simulation as values move.
function setupThresholds() {
  const form = document.getElementById("thresholds-form");
  if (!form) return;
  let timer = null;
  const refresh = async () => {
    const params = new URLSearchParams({mode: form.dataset.mode});
    form.querySelectorAll('input[type="number"]').forEach((i) => params.set(i.name, i.value));
    const res = await fetch("/thresholds/simulate?" + params.toString(), {headers: {"Accept": "application/json"}});
    const data = await res.json();
    if (!res.ok) return;
    document.getElementById("judged").textContent = data.judged;
    for (const [label, bands] of Object.entries(data.labels)) {
      for (const [band, r] of Object.entries(bands)) {
        const row = form.querySelector(`tr[data-key="${label}.${band}"]`);
        if (!row) continue;
        const fmt = (x) => (x === null ? "–" : x.toFixed(2));
        row.querySelector('[data-field="produced"]').textContent = r.produced;
        row.querySelector('[data-field="tp"]').textContent = r.tp;
        row.querySelector('[data-field="fp"]').textContent = r.fp;
        row.querySelector('[data-field="precision"]').textContent = fmt(r.precision);
        row.querySelector('[data-field="recall"]').textContent = fmt(r.recall);
      }
    }
    form.dataset.simulated = String(Number(form.dataset.simulated || 0) + 1);
  };
  form.querySelectorAll('input[type="range"]').forEach((range) => {
    const number = document.getElementById(range.dataset.for);
    range.addEventListener("input", () => { number.value = range.value; clearTimeout(timer); timer = setTimeout(refresh, 120); });
    number.addEventListener("input", () => { range.value = number.value; clearTimeout(timer); timer = setTimeout(refresh, 120); });
  });
}

// Keyboard shortcuts: j/k move, Enter opens, c claim, d dismiss, n send note, ? help.
function setupKeys() {
  const page = document.body.dataset.page;
  const rows = Array.from(document.querySelectorAll("#queue tbody tr[data-case]"));
  let sel = -1;
  const select = (i) => {
    if (!rows.length) return;
    sel = Math.max(0, Math.min(rows.length - 1, i));
    rows.forEach((r, k) => r.classList.toggle("selected", k === sel));
    rows[sel].scrollIntoView({block: "nearest"});
  };
  const click = (id) => { const b = document.getElementById(id); if (b && !b.disabled) b.click(); };
  document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (typing(ev)) {
      if (ev.key === "Escape") ev.target.blur();
      return;
    }
    const key = ev.key;
    if (key === "?") { const h = document.getElementById("help"); if (h && !h.open) h.showModal(); return; }
    if (page === "queue") {
      if (key === "j") select(sel + 1);
      else if (key === "k") select(sel - 1);
      else if ((key === "Enter" || key === "o") && sel >= 0) location.href = "/case/" + rows[sel].dataset.case;
      else if (key === "c" && sel >= 0) { const f = rows[sel].querySelector("form.claim"); if (f) f.requestSubmit(); }
      else if ((key === "d" || key === "n") && sel >= 0) location.href = "/case/" + rows[sel].dataset.case;
      else return;
      ev.preventDefault();
    } else if (page === "case") {
      if (key === "j") { const a = document.getElementById("next-case"); if (a) location.href = a.href; }
      else if (key === "k") { const a = document.getElementById("prev-case"); if (a) location.href = a.href; }
      else if (key === "c") click("claim");
      else if (key === "n") click("send-note");
      else if (key === "d") { const s = document.getElementById("reason-dismiss"); if (s) s.focus(); }
      else return;
      ev.preventDefault();
    }
  });
}

document.addEventListener("DOMContentLoaded", () => { setupSandbox(); setupThresholds(); setupKeys(); });
