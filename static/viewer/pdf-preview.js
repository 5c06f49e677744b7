// PDF previews with pdf.js, so every browser shows the same pages: one page at a time on a
// canvas, with page navigation and zoom. On the print page, every page is drawn at print
// resolution and the browser's print dialogue opens when the last one is ready.
//
// Markup: an element with data-pdf-preview holding data-src (the authenticated inline URL)
// and the pdf.js asset URLs, a [data-pdf-status] line and, for the screen preview,
// buttons with data-pdf-action="previous|next|zoom-out|zoom-in". Nothing here stores the
// document anywhere but in memory.
import { GlobalWorkerOptions, getDocument } from "../pdfjs/build/pdf.min.mjs";

const ZOOM_STEPS = [0.5, 0.75, 1, 1.25, 1.5, 2, 3];
const PRINT_SCALE = 2; // about 150 dpi: sharp on paper without huge canvases

function options(element) {
  const data = element.dataset;
  GlobalWorkerOptions.workerSrc = data.pdfWorker;
  return {
    url: data.src,
    withCredentials: true,
    standardFontDataUrl: data.pdfFonts,
    cMapUrl: data.pdfCmaps,
    wasmUrl: data.pdfWasm,
    iccUrl: data.pdfIccs,
    // The document is untrusted: no scripting, no forms, no links out.
    enableScripting: false,
  };
}

function say(element, text) {
  const status = element.querySelector("[data-pdf-status]");
  if (status) status.textContent = text;
}

// `scale` is in CSS pixels; the canvas has `density` device pixels to each, so text stays
// sharp on high-resolution screens. (Setting style properties is allowed by our CSP.)
async function drawPage(pdf, number, canvas, scale, density = 1) {
  const page = await pdf.getPage(number);
  const viewport = page.getViewport({ scale: scale * density });
  canvas.width = Math.floor(viewport.width);
  canvas.height = Math.floor(viewport.height);
  if (density !== 1) {
    canvas.style.width = `${Math.floor(viewport.width / density)}px`;
    canvas.style.height = `${Math.floor(viewport.height / density)}px`;
  }
  await page.render({ canvas, viewport }).promise;
  page.cleanup();
}

async function screenPreview(element) {
  const pdf = await getDocument(options(element)).promise;
  const canvas = element.querySelector("canvas");
  const title = element.dataset.title || "the document";
  const buttons = Object.fromEntries(
    [...element.querySelectorAll("[data-pdf-action]")].map((b) => [b.dataset.pdfAction, b]),
  );
  let number = 1;
  let zoom = ZOOM_STEPS.indexOf(1);
  let drawing = Promise.resolve();

  const show = () => {
    drawing = drawing.then(async () => {
      await drawPage(pdf, number, canvas, ZOOM_STEPS[zoom], window.devicePixelRatio || 1);
      const where = `Page ${number} of ${pdf.numPages}`;
      canvas.setAttribute("aria-label", `${where} of ${title}`);
      say(element, `${where}, zoom ${Math.round(ZOOM_STEPS[zoom] * 100)}%`);
      buttons.previous.disabled = number <= 1;
      buttons.next.disabled = number >= pdf.numPages;
      buttons["zoom-out"].disabled = zoom <= 0;
      buttons["zoom-in"].disabled = zoom >= ZOOM_STEPS.length - 1;
      element.dataset.pdfPages = String(pdf.numPages);
      element.dataset.pdfPage = String(number);
    });
    return drawing;
  };
  buttons.previous.addEventListener("click", () => { number = Math.max(1, number - 1); show(); });
  buttons.next.addEventListener("click", () => { number = Math.min(pdf.numPages, number + 1); show(); });
  buttons["zoom-out"].addEventListener("click", () => { zoom = Math.max(0, zoom - 1); show(); });
  buttons["zoom-in"].addEventListener("click", () => { zoom = Math.min(ZOOM_STEPS.length - 1, zoom + 1); show(); });
  element.querySelector("[data-pdf-toolbar]").hidden = false;
  canvas.hidden = false;
  await show();
}

async function printPreview(element) {
  const pdf = await getDocument(options(element)).promise;
  const pages = element.querySelector("[data-pdf-pages]");
  for (let number = 1; number <= pdf.numPages; number += 1) {
    say(element, `Preparing page ${number} of ${pdf.numPages}…`);
    const canvas = document.createElement("canvas");
    canvas.className = "viewer-print__page";
    canvas.setAttribute("role", "img");
    canvas.setAttribute("aria-label", `Page ${number} of ${pdf.numPages}`);
    pages.append(canvas);
    await drawPage(pdf, number, canvas, PRINT_SCALE);
  }
  element.dataset.pdfPages = String(pdf.numPages);
  say(element, `Ready to print: ${pdf.numPages} page${pdf.numPages === 1 ? "" : "s"}.`);
}

function start(element) {
  if (element.dataset.pdfStarted) return;
  element.dataset.pdfStarted = "true";
  const printing = element.dataset.pdfPreview === "print";
  (printing ? printPreview(element) : screenPreview(element))
    .then(() => {
      element.dataset.pdfReady = "true";
      if (printing) document.dispatchEvent(new CustomEvent("viewer:print-ready"));
    })
    .catch((error) => {
      element.dataset.pdfReady = "failed";
      // A broken or hostile file: say so plainly.
      // Only someone whose role may download is told to (a receptionist may not).
      const download = element.dataset.canDownload === "true";
      say(
        element,
        "This PDF could not be shown." +
          (download ? " Download it to open it on this computer." : ""),
      );
      if (printing) document.dispatchEvent(new CustomEvent("viewer:print-failed"));
      console.warn("PDF preview failed:", error && error.name);
    });
}

function startAll(root) {
  if (root.matches && root.matches("[data-pdf-preview]")) start(root);
  for (const element of root.querySelectorAll("[data-pdf-preview]")) start(element);
}

startAll(document);
// A server-made preview or a print arrives later, swapped in by htmx.
document.addEventListener("htmx:load", (event) => startAll(event.detail.elt));
