// Start NHS.UK frontend components on load, and again inside anything htmx swaps in.
import { initAll } from "../nhsuk/nhsuk-frontend.min.js";

const config = { button: { preventDoubleClick: true } };

initAll(config);
document.body.addEventListener("htmx:afterSettle", (event) => {
  initAll({ ...config, scope: event.detail.elt });
});

// When the server cannot be reached at all, say so where the user is looking.
document.body.addEventListener("htmx:sendError", () => {
  const main = document.getElementById("maincontent");
  if (!main || main.querySelector(".viewer-htmx-error--offline")) return;
  const summary = document.createElement("div");
  summary.className = "nhsuk-error-summary viewer-htmx-error viewer-htmx-error--offline";
  summary.setAttribute("role", "alert");
  const title = document.createElement("h2");
  title.className = "nhsuk-error-summary__title";
  title.textContent = "The viewer could not be reached";
  const body = document.createElement("p");
  body.textContent = "Check your connection, then try again. Nothing has changed.";
  summary.append(title, body);
  main.prepend(summary);
});

// Progress that htmx replaces at every poll is read out through one live region that stays
// on the page ([data-live-status]), and only when what it says changes: a role="status"
// swapped in afresh at each poll is announced unreliably, or not at all.
function announce() {
  const region = document.querySelector("[data-live-status]");
  const source = document.querySelector("[data-announce]");
  if (!region || !source) return;
  const text = source.dataset.announce;
  if (region.textContent !== text) region.textContent = text;
}
document.body.addEventListener("htmx:afterSettle", announce);
announce();
