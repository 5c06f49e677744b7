// The print page: once the server-made PDF (provenance on every page) has been drawn by
// pdf.js, enable the Print button and open the browser's print dialogue, once.
const button = document.querySelector("[data-print-now]");
let opened = false;

document.addEventListener("viewer:print-ready", () => {
  document.body.dataset.printReady = "true";
  if (button) button.disabled = false;
  if (!opened) {
    opened = true;
    window.print();
  }
});
document.addEventListener("viewer:print-failed", () => {
  document.body.dataset.printReady = "failed";
});
if (button) button.addEventListener("click", () => window.print());
