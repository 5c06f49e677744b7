// The booking summary's Copy and Print buttons (the page works without them: the
// summary is also a plain text box to select and copy, and the browser can print).
const status = () => document.querySelector(".viewer-copy-status");

document.addEventListener("click", async (event) => {
  const copy = event.target.closest("[data-copy-from]");
  if (copy) {
    const source = document.getElementById(copy.dataset.copyFrom);
    if (!source) return;
    try {
      await navigator.clipboard.writeText(source.value);
    } catch {
      // No clipboard permission (or an older browser): select the text for Ctrl+C.
      source.focus();
      source.select();
      if (status()) status().textContent = "Press Ctrl+C to copy the selected summary";
      return;
    }
    if (status()) status().textContent = copy.dataset.copiedMessage || "Copied";
    return;
  }
  if (event.target.closest("[data-print-page]")) {
    window.print();
  }
});
