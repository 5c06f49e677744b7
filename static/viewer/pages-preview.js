// Server-made page images (a TIFF scan, a BMP): one page at a time, with page navigation
// and zoom. Markup: [data-pages-preview] with data-count, data-title and data-src-base
// (the page URL without its number), buttons with data-pages-action, a [data-pages-status]
// line and the <img>. It arrives in an htmx swap once the conversion is ready.
const ZOOM_STEPS = [0.5, 0.75, 1, 1.5, 2, 3];

function start(element) {
  if (element.dataset.pagesStarted) return;
  element.dataset.pagesStarted = "true";
  const count = Number(element.dataset.count);
  const title = element.dataset.title || "the document";
  const image = element.querySelector("img");
  const status = element.querySelector("[data-pages-status]");
  const buttons = Object.fromEntries(
    [...element.querySelectorAll("[data-pages-action]")].map((b) => [b.dataset.pagesAction, b]),
  );
  let number = 1;
  let zoom = ZOOM_STEPS.indexOf(1);

  const show = () => {
    const where = `Page ${number} of ${count}`;
    if (image.dataset.page !== String(number)) {
      image.src = `${element.dataset.srcBase}${number}`;
      image.dataset.page = String(number);
    }
    image.alt = `${where} of ${title}`;
    // Zoom is the image's width relative to the preview area (CSSOM: allowed by our CSP).
    image.style.width = `${ZOOM_STEPS[zoom] * 100}%`;
    status.textContent = `${where}, zoom ${Math.round(ZOOM_STEPS[zoom] * 100)}%`;
    element.dataset.page = String(number);
    buttons.previous.disabled = number <= 1;
    buttons.next.disabled = number >= count;
    buttons["zoom-out"].disabled = zoom <= 0;
    buttons["zoom-in"].disabled = zoom >= ZOOM_STEPS.length - 1;
  };
  buttons.previous.addEventListener("click", () => { number = Math.max(1, number - 1); show(); });
  buttons.next.addEventListener("click", () => { number = Math.min(count, number + 1); show(); });
  buttons["zoom-out"].addEventListener("click", () => { zoom = Math.max(0, zoom - 1); show(); });
  buttons["zoom-in"].addEventListener("click", () => { zoom = Math.min(ZOOM_STEPS.length - 1, zoom + 1); show(); });
  image.dataset.page = "1";
  element.querySelector("[data-pages-toolbar]").hidden = false;
  show();
}

function startAll(root) {
  if (root.matches && root.matches("[data-pages-preview]")) start(root);
  for (const element of root.querySelectorAll("[data-pages-preview]")) start(element);
}

startAll(document);
document.addEventListener("htmx:load", (event) => startAll(event.detail.elt));
