// The console's only script (the Content-Security-Policy allows no inline script).
"use strict";

function copyText(id, button) {
  const text = document.getElementById(id).textContent;
  const done = () => { const label = button.textContent; button.textContent = "✓"; setTimeout(() => { button.textContent = label; }, 1200); };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done);
  } else {
    const area = document.createElement("textarea");
    area.value = text; document.body.appendChild(area); area.select();
    document.execCommand("copy"); area.remove(); done();
  }
}

function randomToken() {
  const bytes = new Uint8Array(24);
  crypto.getRandomValues(bytes);
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

// Rows of incidents newer than the last look get the class "new"; the last look is the newest id seen.
function markNew(container) {
  const key = "incidents-seen";
  const seen = Number(localStorage.getItem(key) || 0);
  let newest = seen;
  container.querySelectorAll("tr[data-incident]").forEach((row) => {
    const id = Number(row.dataset.incident);
    if (seen && id > seen) row.classList.add("new");
    newest = Math.max(newest, id);
  });
  localStorage.setItem(key, String(newest));
}

function refreshIncidents(container) {
  markNew(container);
  setInterval(() => {
    fetch(container.dataset.refresh, { credentials: "same-origin" })
      .then((response) => (response.ok && response.url.indexOf("/login") < 0 ? response.text() : null))
      .then((html) => {
        if (html === null) return;
        const scroll = window.scrollY;
        const before = new Set([...container.querySelectorAll("tr.new")].map((r) => r.dataset.incident));
        container.innerHTML = html;
        container.querySelectorAll("tr[data-incident]").forEach((row) => { if (before.has(row.dataset.incident)) row.classList.add("new"); });
        markNew(container);
        window.scrollTo(0, scroll);
      })
      .catch(() => {});
  }, 5000);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("button.copy").forEach((button) => {
    button.addEventListener("click", () => copyText(button.dataset.copyTarget, button));
  });
  const generate = document.getElementById("generate-token");
  if (generate) generate.addEventListener("click", () => { document.getElementById("token").value = randomToken(); });
  document.querySelectorAll("select[data-reload-param]").forEach((select) => {
    select.addEventListener("change", () => {
      const url = new URL(window.location.href);
      url.searchParams.set(select.dataset.reloadParam, select.value);
      url.searchParams.set("new", "1");
      url.hash = "new-source";
      window.location.assign(url.toString());
    });
  });
  const rows = document.getElementById("incident-rows");
  if (rows) refreshIncidents(rows);
});
