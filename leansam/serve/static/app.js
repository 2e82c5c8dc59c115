// leansam serve: the single-page UI. State lives here; the server is stateless per request.
// Tests read window.leansam (state, lastResponse, lastExport) and the mask canvas' data-*
// attributes (data-busy, data-mask-rle, data-image-id).
"use strict";

const $ = (id) => document.getElementById(id);
const imageCanvas = $("image-canvas");
const maskCanvas = $("mask-canvas"); // masks only, so tests can read the drawn pixels back
const promptCanvas = $("prompt-canvas"); // points and boxes, drawn over the masks
const COLORS = [[30, 144, 255], [255, 99, 71], [50, 205, 50], [255, 215, 0], [186, 85, 211],
  [0, 206, 209], [255, 140, 0], [199, 21, 133]];

const state = { image: null, model: "", objects: [], current: -1 };
// everythingOptions: extra fields of the segment-everything request (thresholds, grid size).
window.leansam = { state, lastResponse: null, lastExport: null, error: null, everythingOptions: {} };

function setStatus(text) { $("status").textContent = text; }

async function api(method, path, body) {
  const opts = { method, headers: {} };
  if (body instanceof FormData) opts.body = body;
  else if (body !== undefined) {
    opts.body = JSON.stringify(body);
    opts.headers["Content-Type"] = "application/json";
  }
  const r = await fetch(path, opts);
  const data = await r.json().catch(() => ({}));
  if (!r.ok) {
    const detail = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail);
    throw new Error(`${r.status}: ${detail}`);
  }
  return data;
}

// Runs `fn` with data-busy=1 so tests (and people) can tell when the page is settled.
let pending = 0;
async function busy(fn) {
  maskCanvas.dataset.busy = String(++pending);
  try { await fn(); window.leansam.error = null; } catch (e) {
    window.leansam.error = String(e.message || e);
    setStatus(window.leansam.error);
  } finally { maskCanvas.dataset.busy = String(--pending); }
}

function currentObject() { return state.objects[state.current] || null; }

function newObject() {
  state.objects.push({ label: $("label-input").value || "object", points: [], box: null,
    history: [], mask: null, score: null, area: 0, bbox: null });
  state.current = state.objects.length - 1;
  render();
}

async function loadImage(src, info) {
  const img = new Image();
  img.src = src;
  await img.decode();
  state.image = { ...info, element: img, name: info.name || "image" };
  state.objects = [];
  state.current = -1;
  for (const c of [imageCanvas, maskCanvas, promptCanvas]) { c.width = info.width; c.height = info.height; }
  imageCanvas.getContext("2d").drawImage(img, 0, 0, info.width, info.height);
  maskCanvas.dataset.imageId = info.id;
  newObject();
  setStatus(`${state.image.name}: ${info.width} x ${info.height}`);
}

async function openUpload(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  await busy(async () => {
    const info = await api("POST", "/api/images", form);
    await loadImage(URL.createObjectURL(file), { ...info, name: file.name });
  });
}

async function openFolderImage(name) {
  await busy(async () => {
    const info = await api("POST", "/api/folder/open", { name });
    const url = "/api/folder/" + name.split("/").map(encodeURIComponent).join("/");
    await loadImage(url, { ...info, name });
  });
}

async function predictCurrent() {
  const obj = currentObject();
  if (!state.image || !obj) return;
  if (!obj.points.length && !obj.box) { obj.mask = null; render(); return; }
  const body = { points: obj.points, boxes: obj.box ? [obj.box] : [], model: state.model || null };
  const seq = (obj.seq = (obj.seq || 0) + 1);
  await busy(async () => {
    const res = await api("POST", `/api/images/${state.image.id}/predict`, body);
    if (seq !== obj.seq) return; // a newer prompt of this object is on its way
    window.leansam.lastResponse = res;
    const result = res.results[0];
    const best = result.masks[result.best];
    Object.assign(obj, { mask: best.segmentation, score: best.score, area: best.area, bbox: best.bbox });
    render();
  });
}

function render() {
  const ctx = maskCanvas.getContext("2d");
  const w = maskCanvas.width, h = maskCanvas.height;
  ctx.clearRect(0, 0, w, h);
  if (w && h) {
    const layer = ctx.createImageData(w, h);
    state.objects.forEach((o, i) => {
      if (!o.mask) return;
      const [r, g, b] = COLORS[i % COLORS.length];
      paintRle(o.mask, layer.data, [r, g, b, i === state.current ? 140 : 90]);
    });
    ctx.putImageData(layer, 0, 0);
  }
  drawPrompts(currentObject());
  maskCanvas.dataset.maskRle = currentObject()?.mask ? JSON.stringify(currentObject().mask) : "";
  renderList();
}

function drawPrompts(obj) {
  const ctx = promptCanvas.getContext("2d");
  ctx.clearRect(0, 0, promptCanvas.width, promptCanvas.height);
  if (obj) {
    if (obj.box) {
      ctx.strokeStyle = "#ffeb3b"; ctx.lineWidth = 2;
      const [x0, y0, x1, y1] = obj.box;
      ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    }
    for (const [x, y, label] of obj.points) {
      ctx.fillStyle = label ? "#00e676" : "#ff1744";
      ctx.beginPath(); ctx.arc(x, y, 5, 0, 2 * Math.PI); ctx.fill();
      ctx.strokeStyle = "#fff"; ctx.lineWidth = 1.5; ctx.stroke();
    }
  }
}

function renderList() {
  const list = $("objects");
  list.innerHTML = "";
  state.objects.forEach((o, i) => {
    const li = document.createElement("li");
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = `rgb(${COLORS[i % COLORS.length].join(",")})`;
    li.append(sw, `${o.label}` + (o.mask ? ` (${o.area} px, score ${o.score.toFixed(2)})` : ""));
    if (i === state.current) li.className = "current";
    li.onclick = () => { state.current = i; render(); };
    list.append(li);
  });
}

// Mouse position in image pixels (the canvas may be displayed scaled).
function imagePoint(ev) {
  const r = maskCanvas.getBoundingClientRect();
  const x = (ev.clientX - r.left) * (maskCanvas.width / r.width);
  const y = (ev.clientY - r.top) * (maskCanvas.height / r.height);
  return [Math.min(Math.max(x, 0), maskCanvas.width), Math.min(Math.max(y, 0), maskCanvas.height)];
}

let drag = null;
maskCanvas.addEventListener("contextmenu", (ev) => ev.preventDefault());
maskCanvas.addEventListener("mousedown", (ev) => {
  if (!state.image) return;
  drag = { start: imagePoint(ev), sx: ev.clientX, sy: ev.clientY, button: ev.button, shift: ev.shiftKey };
});
window.addEventListener("mouseup", (ev) => {
  if (!drag) return;
  const d = drag;
  drag = null;
  const obj = currentObject() || (newObject(), currentObject());
  const moved = Math.hypot(ev.clientX - d.sx, ev.clientY - d.sy) > 4;
  if (moved && d.button === 0) {
    const [x1, y1] = imagePoint(ev);
    const [x0, y0] = d.start;
    obj.history.push({ box: obj.box });
    obj.box = [Math.min(x0, x1), Math.min(y0, y1), Math.max(x0, x1), Math.max(y0, y1)];
  } else if (!moved) {
    const label = d.button === 2 || d.shift ? 0 : 1;
    obj.history.push({ point: true });
    obj.points.push([d.start[0], d.start[1], label]);
  } else return;
  render();
  predictCurrent();
});

function undo() {
  const obj = currentObject();
  if (!obj) return;
  const last = obj.history.pop();
  if (!last) {
    if (state.objects.length > 1) { state.objects.splice(state.current, 1); state.current = state.objects.length - 1; }
    render();
    return;
  }
  if (last.point) obj.points.pop(); else obj.box = last.box;
  predictCurrent();
}

async function segmentEverything() {
  if (!state.image) return;
  await busy(async () => {
    setStatus("segmenting everything…");
    const res = await api("POST", `/api/images/${state.image.id}/everything`, {
      model: state.model || null, strategy: $("strategy-select").value, ...window.leansam.everythingOptions });
    window.leansam.lastResponse = res;
    state.objects = state.objects.filter((o) => o.mask);
    for (const m of res.masks) {
      state.objects.push({ label: $("label-input").value || "object", points: [], box: null, history: [],
        mask: m.segmentation, score: m.score, area: m.area, bbox: m.bbox });
    }
    state.current = state.objects.length - 1;
    setStatus(`${res.masks.length} masks from ${res.model} (${res.prompts_decoded} prompts decoded)`);
    render();
  });
}

// The annotations as a COCO dataset: one image, one category per label, RLE segmentations.
function cocoExport() {
  const im = state.image;
  const labels = [...new Set(state.objects.filter((o) => o.mask).map((o) => o.label))];
  const coco = {
    info: { description: "leansam serve export", model: state.model },
    images: [{ id: 1, file_name: im ? im.name : "", width: im ? im.width : 0, height: im ? im.height : 0 }],
    categories: labels.map((name, i) => ({ id: i + 1, name })),
    annotations: state.objects.filter((o) => o.mask).map((o, i) => ({
      id: i + 1, image_id: 1, category_id: labels.indexOf(o.label) + 1, segmentation: o.mask,
      area: o.area, bbox: o.bbox, iscrowd: 0, score: o.score })),
  };
  window.leansam.lastExport = coco;
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([JSON.stringify(coco)], { type: "application/json" }));
  a.download = (im ? im.name.replace(/\.[^.]*$/, "") : "annotations") + ".coco.json";
  a.click();
  return coco;
}

async function loadModels() {
  const res = await api("GET", "/api/models");
  const sel = $("model-select");
  for (const m of res.models.filter((m) => m.available)) sel.add(new Option(m.name, m.name));
  sel.value = res.default;
  state.model = res.default;
  sel.onchange = () => { state.model = sel.value; predictCurrent(); };
}

async function loadFolder() {
  const r = await fetch("/api/folder");
  if (!r.ok) return;
  const sel = $("folder-select");
  for (const name of (await r.json()).images) sel.add(new Option(name, name));
  sel.hidden = false;
  sel.onchange = () => sel.value && openFolderImage(sel.value);
}

$("file-input").onchange = (ev) => ev.target.files[0] && openUpload(ev.target.files[0]);
$("new-object").onclick = newObject;
$("undo").onclick = undo;
$("everything").onclick = segmentEverything;
$("export").onclick = cocoExport;
$("label-input").onchange = () => { const o = currentObject(); if (o) { o.label = $("label-input").value; render(); } };
window.addEventListener("keydown", (ev) => {
  if (ev.target.tagName === "INPUT") return;
  if ((ev.ctrlKey || ev.metaKey) && ev.key === "z") { ev.preventDefault(); undo(); }
  else if (ev.key === "n") newObject();
});
busy(async () => { await loadModels(); await loadFolder(); });
