// The print page: once the server-made PDF (provenance on every page) has been drawn by
// pdf.js, enable the Print button and open the browser's print dialogue, once. The button
// arrives with the ready print (htmx swaps it in), so it is looked up when needed; if the
// PDF cannot be drawn it goes, leaving the message that says so.
let opened = false;
const button = () => document.querySelector("[data-print-now]");

document.addEventListener("viewer:print-ready", () => {
  document.body.dataset.printReady = "true";
  if (button()) button().disabled = false;
  if (!opened) {
    opened = true;
    window.print();
  }
});
document.addEventListener("viewer:print-failed", () => {
  document.body.dataset.printReady = "failed";
  button()?.closest("p")?.remove();
});
document.addEventListener("click", (event) => {
  if (event.target.closest("[data-print-now]")) window.print();
});
