// Start NHS.UK frontend components on load, and again inside anything htmx swaps in.
import { initAll } from "../nhsuk/nhsuk-frontend.min.js";

const config = { button: { preventDoubleClick: true } };

initAll(config);
document.body.addEventListener("htmx:afterSettle", (event) => {
  initAll({ ...config, scope: event.detail.elt });
});
