// The print page: wait until the document is drawn (pdf.js pages, the image, or the text),
// then enable the Print button and open the browser's print dialogue once.
const button = document.querySelector("[data-print-now]");
const holder = document.querySelector("[data-print-kind]");

function ready() {
  document.body.dataset.printReady = "true";
  button.disabled = false;
  window.print();
}

function failed(message) {
  document.body.dataset.printReady = "failed";
  const status = document.createElement("p");
  status.className = "nhsuk-error-message";
  status.textContent = message;
  holder.prepend(status);
}

button.addEventListener("click", () => window.print());

const kind = holder.dataset.printKind;
if (kind === "pdf") {
  document.addEventListener("viewer:print-ready", ready, { once: true });
} else if (kind === "image") {
  const image = holder.querySelector("img");
  if (image.complete && image.naturalWidth) ready();
  else {
    image.addEventListener("load", ready, { once: true });
    image.addEventListener("error", () => failed("The image could not be loaded for printing."), { once: true });
  }
} else {
  // Plain text goes in as text, never as markup.
  fetch(holder.dataset.src, { credentials: "same-origin" })
    .then((response) => {
      if (!response.ok) throw new Error(String(response.status));
      return response.text();
    })
    .then((text) => {
      holder.querySelector("[data-print-text]").textContent = text;
      ready();
    })
    .catch(() => failed("The document could not be loaded for printing."));
}
