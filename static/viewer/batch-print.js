// Batch print on the documents table: "Select all letters on this page" ticks every letter
// on the page, the count of chosen documents is read out, and the submit button says how
// many it will print ("Print 3 selected"). The table arrives again in htmx swaps, so
// everything is found afresh on each event rather than held.
function refresh() {
  const chosen = document.querySelectorAll("input[form='batch-print']:checked").length;
  const count = document.querySelector("[data-batch-print-count]");
  if (count) count.textContent = chosen ? `${chosen} selected` : "";
  const submit = document.querySelector("[data-batch-print-submit]");
  if (submit) submit.textContent = chosen ? `Print ${chosen} selected` : "Print selected";
  const letters = document.querySelector("[data-select-letters]");
  if (letters) letters.hidden = !document.querySelector("input[form='batch-print'][data-letter]");
}

document.addEventListener("click", (event) => {
  if (!event.target.closest("[data-select-letters]")) return;
  for (const box of document.querySelectorAll("input[form='batch-print'][data-letter]")) {
    box.checked = true;
  }
  refresh();
});
document.addEventListener("change", (event) => {
  if (event.target.matches("input[form='batch-print']")) refresh();
});
document.addEventListener("htmx:load", refresh);
refresh();
