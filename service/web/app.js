// The try-it page of the reid service: plain JavaScript, no dependencies.
//
// It calls the service's own REST API (same origin): GET /readyz, GET /v1/galleries,
// POST /v1/attributes, POST /v1/galleries/{g}/search and POST /v1/galleries/{g}/items.
// Every error the service answers has the shape {"error": {code, message, details}};
// the page shows its message as it is. Untrusted text is only ever set as textContent.
"use strict";

const THUMB_HEIGHT = 96; // pixels of the thumbnails the page stores in item metadata
const THUMB_URI = /^data:image\/(jpeg|png|webp);base64,[A-Za-z0-9+/=]+$/;

/** An error answered by the service (or a failure to reach it). */
class ServiceError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const $ = (id) => document.getElementById(id);

/** Calls the API (with the API key, if one was typed); resolves to the JSON body. */
async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = $("api-key").value.trim();
  if (key) headers.set("X-API-Key", key);
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (err) {
    throw new ServiceError(0, "unreachable", `the service cannot be reached (${err.message})`);
  }
  if (response.status === 204) return null;
  let body = null;
  try {
    body = await response.json();
  } catch (_err) {
    body = null;
  }
  if (!response.ok) {
    const error = body && body.error;
    if (error && typeof error.message === "string") {
      throw new ServiceError(response.status, String(error.code), error.message);
    }
    throw new ServiceError(response.status, "http_error", `HTTP ${response.status} ${response.statusText}`);
  }
  return body;
}

/** An element with optional class and text. */
function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function showError(err) {
  const box = $("error");
  box.replaceChildren();
  box.append(el("strong", "error-code", err.code ? `${err.code}: ` : "Error: "));
  box.append(el("span", "error-message", err.message));
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").replaceChildren();
}

// ---------------------------------------------------------------- status and galleries

async function loadStatus() {
  const line = $("model-status");
  try {
    const ready = await api("/readyz");
    const m = ready.model;
    line.textContent = `Model ${m.name}/${m.version} (${m.dim}-d embedding, attributes: ${m.attributes.join(", ")}) on ${ready.providers.join(", ")}`;
  } catch (err) {
    line.textContent = `Service not ready: ${err.message}`;
  }
}

/** Fills the gallery list; open galleries are selectable, others shown disabled. */
async function loadGalleries(select) {
  const list = $("gallery");
  const previous = select || list.value;
  const body = await api("/v1/galleries");
  list.replaceChildren();
  for (const g of body.galleries) {
    const label = g.status === "open" ? `${g.name} (${g.items} items)` : `${g.name} (${g.status})`;
    const option = el("option", "", label);
    option.value = g.name;
    option.disabled = g.status !== "open";
    list.append(option);
  }
  if (body.galleries.some((g) => g.name === previous)) list.value = previous;
  if (body.galleries.length === 0) {
    const option = el("option", "", "no gallery yet: add images below");
    option.value = "";
    option.disabled = true;
    list.append(option);
  }
}

// ---------------------------------------------------------------- rendering

function formatTime(iso) {
  if (iso === null || iso === undefined) return "time unknown";
  const t = new Date(iso);
  return Number.isNaN(t.getTime()) ? String(iso) : t.toISOString().replace("T", " ").slice(0, 19) + "Z";
}

/** Fills ``dl`` with attribute -> "label (probability %)". */
function fillAttributes(dl, attributes) {
  dl.replaceChildren();
  for (const [name, p] of Object.entries(attributes || {})) {
    dl.append(el("dt", "", name));
    dl.append(el("dd", "", `${p.label} (${Math.round(p.probability * 100)}%)`));
  }
  return dl;
}

function thumbnail(item) {
  const uri = item.metadata && item.metadata.thumbnail;
  if (typeof uri === "string" && THUMB_URI.test(uri)) {
    const img = el("img", "thumb");
    img.src = uri;
    img.alt = `item ${item.id}`;
    return img;
  }
  return el("div", "thumb placeholder", "no image");
}

/** One match card; ``before`` is its rank in the other column (side by side), if any. */
function matchCard(match, rank, before) {
  const item = match.item;
  const li = el("li", "match");
  li.dataset.itemId = String(item.id);
  li.append(thumbnail(item));
  const info = el("div", "match-info");
  const head = el("div", "match-head");
  head.append(el("span", "rank", `#${rank}`));
  head.append(el("span", "score", match.score.toFixed(3)));
  if (before !== undefined) {
    const moved = before === null ? "new" : before === rank ? "=" : `was #${before}`;
    head.append(el("span", "moved", moved));
  }
  info.append(head);
  info.append(el("div", "distance", `distance ${match.distance.toFixed(3)}`));
  info.append(el("div", "camera", `camera ${item.camera}`));
  info.append(el("div", "time", formatTime(item.timestamp)));
  const name = item.external_id || (item.metadata && item.metadata.file) || "";
  info.append(el("div", "item-id", `id ${item.id}${name ? ` · ${name}` : ""}`));
  info.append(fillAttributes(el("dl", "attributes"), item.attributes));
  li.append(info);
  return li;
}

/** One ranked list; ``reference`` (the other list) marks how each rank moved. */
function resultColumn(response, reference) {
  const column = el("section", "column");
  column.dataset.reranked = String(response.reranked);
  const title = response.reranked ? "Re-ranked (k-reciprocal)" : "Plain ranking (cosine)";
  column.append(el("h3", "", `${title}: ${response.matches.length} matches in ${response.gallery}`));
  if (response.matches.length === 0) {
    column.append(el("p", "muted empty", "No match."));
    return column;
  }
  const ranks = new Map();
  if (reference) reference.matches.forEach((m, i) => ranks.set(m.item.id, i + 1));
  const list = el("ol", "matches");
  response.matches.forEach((m, i) => {
    const before = reference ? (ranks.get(m.item.id) ?? null) : undefined;
    list.append(matchCard(m, i + 1, before));
  });
  column.append(list);
  return column;
}

function renderResults(responses) {
  const results = $("results");
  results.replaceChildren();
  const [first, second] = responses;
  results.append(resultColumn(first));
  if (second) results.append(resultColumn(second, first));
  results.classList.toggle("side-by-side", Boolean(second));
}

function renderQuery(file, attributes) {
  const preview = $("query-preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  fillAttributes($("query-attributes"), attributes.attributes);
  $("query").hidden = false;
}

// ---------------------------------------------------------------- search

let searchSeq = 0; // answers of an older search never overwrite a newer one

function searchOnce(gallery, file, k, rerank) {
  const form = new FormData();
  form.append("image", file, file.name);
  form.append("k", String(k));
  form.append("rerank", rerank ? "true" : "false");
  return api(`/v1/galleries/${encodeURIComponent(gallery)}/search`, { method: "POST", body: form });
}

function attributesOf(file) {
  const form = new FormData();
  form.append("image", file, file.name);
  return api("/v1/attributes", { method: "POST", body: form });
}

function ranking() {
  return document.querySelector('input[name="ranking"]:checked').value;
}

async function runSearch() {
  const file = $("query-file").files[0];
  const gallery = $("gallery").value;
  if (!file || !gallery) return;
  const k = Number($("k").value);
  const mode = ranking();
  const seq = ++searchSeq;
  const results = $("results");
  results.dataset.state = "busy";
  clearError();
  try {
    const searches =
      mode === "both"
        ? [searchOnce(gallery, file, k, false), searchOnce(gallery, file, k, true)]
        : [searchOnce(gallery, file, k, mode === "rerank")];
    const [attributes, ...responses] = await Promise.all([attributesOf(file), ...searches]);
    if (seq !== searchSeq) return;
    renderQuery(file, attributes);
    renderResults(responses);
  } catch (err) {
    if (seq !== searchSeq) return;
    results.replaceChildren();
    $("query").hidden = true;
    showError(err);
  } finally {
    if (seq === searchSeq) results.dataset.state = "done";
  }
}

// ---------------------------------------------------------------- adding images

/** A JPEG data: URI of the image scaled to THUMB_HEIGHT pixels high. */
async function makeThumbnail(file) {
  const bitmap = await createImageBitmap(file);
  const scale = THUMB_HEIGHT / bitmap.height;
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(bitmap.width * scale));
  canvas.height = THUMB_HEIGHT;
  canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  bitmap.close();
  return canvas.toDataURL("image/jpeg", 0.8);
}

async function addImages() {
  const gallery = $("add-gallery").value.trim();
  const camera = $("add-camera").value.trim();
  const files = Array.from($("add-files").files);
  const status = $("add-status");
  clearError();
  status.textContent = `Adding ${files.length} images to ${gallery}…`;
  try {
    const form = new FormData();
    const items = [];
    for (const file of files) {
      let thumbnail = null;
      try {
        thumbnail = await makeThumbnail(file);
      } catch (_err) {
        thumbnail = null; // the browser cannot decode it; the service will say why
      }
      const metadata = { file: file.name };
      if (thumbnail) metadata.thumbnail = thumbnail;
      items.push({ camera, timestamp: new Date(file.lastModified).toISOString(), metadata });
      form.append("images", file, file.name);
    }
    form.append("items", JSON.stringify(items));
    const body = await api(`/v1/galleries/${encodeURIComponent(gallery)}/items`, {
      method: "POST",
      body: form,
    });
    await loadGalleries(body.gallery);
    const created = body.items.filter((i) => i.created).length;
    status.textContent = `Added ${created} of ${files.length} images to ${body.gallery}.`;
  } catch (err) {
    status.textContent = "";
    showError(err);
  }
}

// ---------------------------------------------------------------- wiring

function init() {
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    runSearch();
  });
  for (const radio of document.querySelectorAll('input[name="ranking"]')) {
    radio.addEventListener("change", () => runSearch()); // re-run the current query
  }
  $("api-key").addEventListener("change", () => {
    clearError();
    loadGalleries().catch(showError); // the list may need the key
  });
  $("add-form").addEventListener("submit", (event) => {
    event.preventDefault();
    addImages();
  });
  loadStatus();
  loadGalleries().catch(showError).finally(() => {
    document.body.dataset.ready = "true";
  });
}

document.addEventListener("DOMContentLoaded", init);
