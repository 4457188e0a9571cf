// The try-it page of the reid service: plain JavaScript, no dependencies.
//
// It calls the service's own REST API (same origin): GET /readyz, GET /v1/galleries,
// GET /v1/galleries/{g} (cameras), POST /v1/attributes, POST /v1/galleries/{g}/search,
// /trajectory and /attribute-search, GET /v1/galleries/{g}/items/{id}/image (crops) and
// POST /v1/galleries/{g}/items.
// Every error the service answers has the shape {"error": {code, message, details}};
// the page shows its message as it is. Untrusted text is only ever set as textContent.
"use strict";

// Thumbnails an earlier version of the page stored in item metadata (shown when an item
// has no stored crop).
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

/** A time as recorded: a date for wall-clock times, an offset for dataset frame times. */
function formatTime(iso, kind) {
  if (iso === null || iso === undefined) return "time unknown";
  const t = new Date(iso);
  if (Number.isNaN(t.getTime())) return String(iso);
  if (kind === "offset") return `${formatOffset(t.getTime() / 1000)} from recording start`;
  return t.toISOString().replace("T", " ").slice(0, 19) + "Z";
}

/** 597.2 -> "+0:09:57.2" */
function formatOffset(seconds) {
  const tenths = Math.round(Math.abs(seconds) * 10);
  const h = Math.floor(tenths / 36000);
  const m = Math.floor((tenths % 36000) / 600);
  const s = tenths % 600;
  const ss = `${String(Math.floor(s / 10)).padStart(2, "0")}.${s % 10}`;
  return `${seconds < 0 ? "-" : "+"}${h}:${String(m).padStart(2, "0")}:${ss}`;
}

function formatGap(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 120) return `+${seconds.toFixed(1)} s`;
  if (seconds < 7200) return `+${(seconds / 60).toFixed(1)} min`;
  return `+${(seconds / 3600).toFixed(1)} h`;
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

// Crops come from GET /v1/galleries/{g}/items/{id}/image, fetched with the API key (an
// <img src> could not send it) and shown from blob: URLs, one fetch per URL and key.
const crops = new Map();

function fetchCrop(url) {
  const key = `${$("api-key").value.trim()}\n${url}`;
  if (!crops.has(key)) {
    const headers = new Headers();
    const apiKey = $("api-key").value.trim();
    if (apiKey) headers.set("X-API-Key", apiKey);
    const pending = fetch(url, { headers })
      .then((r) => (r.ok ? r.blob() : null))
      .then((blob) => (blob ? URL.createObjectURL(blob) : null))
      .catch(() => null);
    crops.set(key, pending);
  }
  return crops.get(key);
}

/** The item's crop (placeholder until it loads, and when it has none). */
function thumbnail(item, className = "thumb") {
  const holder = el("div", `${className} placeholder`, "no image");
  const uri = item.metadata && item.metadata.thumbnail;
  const url = typeof item.image_url === "string" && item.image_url.startsWith("/v1/") ? item.image_url : null;
  if (!url && !(typeof uri === "string" && THUMB_URI.test(uri))) return holder;
  const img = el("img", className);
  img.alt = `item ${item.id}`;
  img.dataset.itemId = String(item.id);
  if (!url) {
    img.src = uri; // a thumbnail an older page stored in the item's metadata
    return img;
  }
  holder.textContent = "loading";
  holder.dataset.pending = "true";
  fetchCrop(url).then((src) => {
    if (src) {
      img.src = src;
      holder.replaceWith(img);
    } else {
      holder.textContent = "no image";
      delete holder.dataset.pending;
    }
  });
  return holder;
}

/** One result card; ``before`` is its rank in the other column (side by side), if any. */
function matchCard(match, rank, before) {
  const item = match.item;
  const li = el("li", "match");
  li.dataset.itemId = String(item.id);
  li.append(thumbnail(item));
  const info = el("div", "match-info");
  const head = el("div", "match-head");
  head.append(el("span", "rank", `#${rank}`));
  if (match.probability !== undefined) {
    head.append(el("span", "score probability", `${(match.probability * 100).toFixed(1)}%`));
  } else {
    head.append(el("span", "score", match.score.toFixed(3)));
  }
  if (before !== undefined) {
    const moved = before === null ? "new" : before === rank ? "=" : `was #${before}`;
    head.append(el("span", "moved", moved));
  }
  info.append(head);
  if (match.distance !== undefined) {
    info.append(el("div", "distance", `distance ${match.distance.toFixed(3)}`));
  }
  info.append(el("div", "camera", `camera ${item.camera}`));
  info.append(el("div", "time", formatTime(item.timestamp, item.time_kind)));
  const name = item.external_id || (item.metadata && item.metadata.file) || "";
  info.append(el("div", "item-id", `id ${item.id}${name ? ` · ${name}` : ""}`));
  info.append(fillAttributes(el("dl", "attributes"), item.attributes));
  li.append(info);
  return li;
}

function cardList(matches, reference) {
  const ranks = new Map();
  if (reference) reference.matches.forEach((m, i) => ranks.set(m.item.id, i + 1));
  const list = el("ol", "matches");
  matches.forEach((m, i) => {
    const before = reference ? (ranks.get(m.item.id) ?? null) : undefined;
    list.append(matchCard(m, i + 1, before));
  });
  return list;
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
  column.append(cardList(response.matches, reference));
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
  const chips = $("query-attributes");
  chips.replaceChildren();
  for (const [name, p] of Object.entries(attributes.attributes || {})) {
    const chip = el("button", "chip", `${name}: ${p.label} (${Math.round(p.probability * 100)}%)`);
    chip.type = "button";
    chip.dataset.name = name;
    chip.dataset.value = p.label;
    chip.setAttribute("aria-pressed", "false");
    chip.addEventListener("click", () => {
      chip.setAttribute("aria-pressed", chip.getAttribute("aria-pressed") === "true" ? "false" : "true");
      runAttributeSearch();
    });
    chips.append(chip);
  }
  $("query").hidden = false;
}

// ---------------------------------------------------------------- trajectory

/** Lanes (one per camera) with the crops placed by time, the path and unknown times. */
function renderTrajectory(t) {
  const box = $("trajectory");
  const timeline = $("timeline");
  timeline.replaceChildren();
  $("path").replaceChildren();
  $("unknown-time").replaceChildren();
  const steps = t.path.length;
  $("trajectory-summary").textContent =
    `${steps} sighting${steps === 1 ? "" : "s"} on ${t.lanes.length} camera${t.lanes.length === 1 ? "" : "s"} at score ≥ ${t.min_score}` +
    (t.unknown_time.length ? `, ${t.unknown_time.length} with unknown time` : "");
  const span = new Map(); // time kind -> [min, max] seconds
  for (const s of t.path) {
    const [lo, hi] = span.get(s.time.kind) || [s.time.seconds, s.time.seconds];
    span.set(s.time.kind, [Math.min(lo, s.time.seconds), Math.max(hi, s.time.seconds)]);
  }
  for (const lane of t.lanes) {
    const row = el("div", "lane");
    row.dataset.camera = lane.camera;
    row.append(el("div", "lane-camera", lane.camera));
    const track = el("div", "lane-track");
    for (const s of lane.sightings) {
      const [lo, hi] = span.get(s.time.kind);
      // Offsets and dates are different clocks: with both, offsets take the lane's left part.
      const [from, width] = span.size < 2 ? [0, 100] : s.time.kind === "offset" ? [0, 15] : [25, 75];
      const spot = el("div", "sighting");
      spot.dataset.itemId = String(s.item.id);
      spot.dataset.kind = s.time.kind;
      spot.style.left = `${from + (hi > lo ? (s.time.seconds - lo) / (hi - lo) : 0.5) * width}%`;
      spot.title = `${s.time.text} · score ${s.score.toFixed(3)}${s.gap_s !== null ? ` · ${formatGap(s.gap_s)} on this camera` : ""}`;
      spot.append(thumbnail(s.item, "lane-thumb"));
      spot.append(el("span", "sighting-time", s.time.kind === "offset" ? s.time.text : s.time.text.slice(11, 19)));
      track.append(spot);
    }
    row.append(track);
    timeline.append(row);
  }
  for (const step of t.path) {
    const li = el("li", step.camera_changed ? "step camera-changed" : "step");
    li.dataset.itemId = String(step.item_id);
    li.append(el("span", "step-camera", step.camera));
    li.append(el("span", "step-time", step.time.text));
    if (step.gap_s !== null) li.append(el("span", "step-gap", formatGap(step.gap_s)));
    $("path").append(li);
  }
  if (t.unknown_time.length) {
    $("unknown-time").append(el("h3", "", "Time unknown"));
    $("unknown-time").append(cardList(t.unknown_time));
  }
  box.hidden = false;
}

// ---------------------------------------------------------------- search

let searchSeq = 0; // answers of an older search never overwrite a newer one

/** The camera and time filters of the form, for a multipart (image) search. */
function appendFilters(form) {
  const f = filters();
  for (const c of f.cameras || []) form.append("cameras", c);
  if (f.time_from) form.append("time_from", f.time_from);
  if (f.time_to) form.append("time_to", f.time_to);
}

/** The camera and time filters as JSON fields (datetime-local inputs are read as UTC). */
function filters() {
  const cameras = Array.from($("cameras").selectedOptions).map((o) => o.value);
  const utc = (v) => (v ? `${v.length === 16 ? `${v}:00` : v}Z` : null);
  const out = {};
  if (cameras.length) out.cameras = cameras;
  if ($("time-from").value) out.time_from = utc($("time-from").value);
  if ($("time-to").value) out.time_to = utc($("time-to").value);
  return out;
}

function searchOnce(gallery, file, k, rerank) {
  const form = new FormData();
  form.append("image", file, file.name);
  form.append("k", String(k));
  form.append("rerank", rerank ? "true" : "false");
  appendFilters(form);
  return api(`/v1/galleries/${encodeURIComponent(gallery)}/search`, { method: "POST", body: form });
}

function trajectoryOf(gallery, file, rerank) {
  const form = new FormData();
  form.append("image", file, file.name);
  form.append("k", "100");
  form.append("rerank", rerank ? "true" : "false");
  form.append("min_score", $("min-score").value || "0.5");
  appendFilters(form);
  return api(`/v1/galleries/${encodeURIComponent(gallery)}/trajectory`, { method: "POST", body: form });
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
    const [attributes, trajectory, ...responses] = await Promise.all([
      attributesOf(file),
      trajectoryOf(gallery, file, mode === "rerank"),
      ...searches,
    ]);
    if (seq !== searchSeq) return;
    renderQuery(file, attributes);
    renderResults(responses);
    renderTrajectory(trajectory);
    $("attribute-results").hidden = true;
  } catch (err) {
    if (seq !== searchSeq) return;
    results.replaceChildren();
    $("query").hidden = true;
    $("trajectory").hidden = true;
    showError(err);
  } finally {
    if (seq === searchSeq) results.dataset.state = "done";
  }
}

let attributeSeq = 0;

/** Searches the gallery by the selected chips' values, under the same filters. */
async function runAttributeSearch() {
  const gallery = $("gallery").value;
  const wanted = {};
  for (const chip of document.querySelectorAll('#query-attributes .chip[aria-pressed="true"]')) {
    wanted[chip.dataset.name] = chip.dataset.value;
  }
  const box = $("attribute-results");
  const seq = ++attributeSeq;
  if (!gallery || Object.keys(wanted).length === 0) {
    box.hidden = true;
    box.replaceChildren();
    return;
  }
  box.dataset.state = "busy";
  clearError();
  try {
    const body = { attributes: wanted, k: Number($("k").value), ...filters() };
    const r = await api(`/v1/galleries/${encodeURIComponent(gallery)}/attribute-search`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    if (seq !== attributeSeq) return;
    box.replaceChildren();
    const said = Object.entries(wanted).map(([n, v]) => `${n}=${v}`).join(", ");
    box.append(el("h2", "", `Attribute search: ${said}`));
    box.append(el("p", "muted", `${r.matches.length} of ${r.matched} items, by joint probability`));
    box.append(cardList(r.matches));
    box.hidden = false;
  } catch (err) {
    if (seq === attributeSeq) showError(err);
  } finally {
    if (seq === attributeSeq) box.dataset.state = "done";
  }
}

/** Fills the camera filter with the selected gallery's cameras. */
async function loadCameras() {
  const list = $("cameras");
  const gallery = $("gallery").value;
  const chosen = new Set(Array.from(list.selectedOptions).map((o) => o.value));
  list.replaceChildren();
  if (!gallery) return;
  const stats = await api(`/v1/galleries/${encodeURIComponent(gallery)}`);
  for (const [camera, n] of Object.entries(stats.cameras).sort()) {
    const option = el("option", "", `${camera} (${n})`);
    option.value = camera;
    option.selected = chosen.has(camera);
    list.append(option);
  }
}

// ---------------------------------------------------------------- adding images

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
      const metadata = { file: file.name };
      items.push({ camera, timestamp: new Date(file.lastModified).toISOString(), metadata });
      form.append("images", file, file.name);
    }
    form.append("items", JSON.stringify(items));
    const body = await api(`/v1/galleries/${encodeURIComponent(gallery)}/items`, {
      method: "POST",
      body: form,
    });
    await loadGalleries(body.gallery);
    await loadCameras();
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
    loadGalleries().then(loadCameras).catch(showError); // the list may need the key
  });
  $("gallery").addEventListener("change", () => loadCameras().catch(showError));
  $("add-form").addEventListener("submit", (event) => {
    event.preventDefault();
    addImages();
  });
  loadStatus();
  loadGalleries().then(loadCameras).catch(showError).finally(() => {
    document.body.dataset.ready = "true";
  });
}

document.addEventListener("DOMContentLoaded", init);
