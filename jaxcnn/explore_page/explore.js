// jaxcnn explore: the page. Plain JavaScript, no build step, nothing fetched but this server's API.
// window.jaxcnnExplore exposes the current pixels and timings so scripts and tests can read them.
"use strict";

const MAX_CHANNELS = 64; // feature maps drawn per layer
const MAX_EXPLAIN_CHANNELS = 16; // input channels whose window, filter and products are shown
const TOP_CLASSES = 5;
const MNIST_BOX = 20 / 28; // MNIST's digits fit a 20x20 box centred (by mass) in 28x28

const byId = (id) => document.querySelector(`[data-testid="${id}"]`);
const state = { net: null, pixels: null, source: "blank", maps: null, explainTarget: null, seq: 0, testCount: null,
  why: null, whySeq: 0, unit: null };
const stats = { seq: 0, renderedSeq: 0, latencies: [], lastLatencyMs: null, lastPrediction: null, ready: false };
window.jaxcnnExplore = { stats, pixels: () => toBase64(state.pixels), state };

// ------------------------------------------------------------------ helpers

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  };
  const response = await fetch(path, options);
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function toBase64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

function fromBase64(text) {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

function floats(encoded) {
  return { shape: encoded.shape, values: new Float32Array(fromBase64(encoded.data).buffer) };
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else if (key === "testid") node.dataset.testid = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

function showError(message) {
  const box = byId("error");
  box.textContent = message;
  box.hidden = !message;
}

function fmt(v) {
  if (v === null || v === undefined) return "pad";
  const a = Math.abs(v);
  return a !== 0 && (a < 0.001 || a >= 10000) ? v.toExponential(2) : v.toFixed(a >= 100 ? 1 : 3);
}

// Diverging colours: orange for positive, blue for negative, white for zero; `scale` is the largest |value|.
function colour(v, scale) {
  const t = scale > 0 ? Math.max(-1, Math.min(1, v / scale)) : 0;
  return t >= 0 ? [255 - 20 * t, 255 - 140 * t, 255 - 230 * t] : [255 + 200 * t, 255 + 120 * t, 255 + 20 * t];
}

// A canvas of one channel (or RGB when `rgb`) of an H x W x C float array.
function mapCanvas(values, h, w, c, channel, scale, rgb = false) {
  const canvas = el("canvas", { width: w, height: h, class: "pixels" });
  const image = canvas.getContext("2d").createImageData(w, h);
  let lo = Infinity, hi = -Infinity;
  if (rgb) for (const v of values) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  for (let p = 0; p < h * w; p++) {
    let rgba;
    if (rgb) rgba = [0, 1, 2].map((k) => (255 * (values[p * c + k] - lo)) / (hi - lo || 1));
    else rgba = colour(values[p * c + channel], scale);
    image.data.set([...rgba, 255], p * 4);
  }
  canvas.getContext("2d").putImageData(image, 0, 0);
  return canvas;
}

function largest(values) {
  let m = 0;
  for (const v of values) m = Math.max(m, Math.abs(v));
  return m;
}

// ------------------------------------------------------------------ the input

const drawCanvas = byId("draw-canvas");
const drawCtx = drawCanvas.getContext("2d", { willReadFrequently: true });
let drawing = false, last = null, drawPending = false;

function clearDrawing() {
  drawCtx.fillStyle = "#000";
  drawCtx.fillRect(0, 0, drawCanvas.width, drawCanvas.height);
}

function pointerAt(event) {
  const box = drawCanvas.getBoundingClientRect();
  return [((event.clientX - box.left) * drawCanvas.width) / box.width, ((event.clientY - box.top) * drawCanvas.height) / box.height];
}

function strokeTo(point) {
  drawCtx.strokeStyle = "#fff";
  drawCtx.lineWidth = drawCanvas.width / 12;
  drawCtx.lineCap = "round";
  drawCtx.lineJoin = "round";
  drawCtx.beginPath();
  drawCtx.moveTo(...(last || point));
  drawCtx.lineTo(...point);
  drawCtx.stroke();
  last = point;
}

drawCanvas.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  if (state.source !== "drawn") clearDrawing();
  state.source = "drawn";
  drawing = true;
  last = null;
  drawCanvas.setPointerCapture(event.pointerId);
  strokeTo(pointerAt(event));
});
drawCanvas.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  strokeTo(pointerAt(event));
  if (!drawPending) { // predict while drawing, one request at a time
    drawPending = true;
    setPixels(pixelsFromDrawing(), "drawn");
    predictOnly().finally(() => { drawPending = false; });
  }
});
function endStroke() {
  if (!drawing) return;
  drawing = false;
  const started = performance.now();
  setPixels(pixelsFromDrawing(), "drawn");
  update(started);
}
drawCanvas.addEventListener("pointerup", endStroke);
drawCanvas.addEventListener("pointercancel", endStroke);

// The drawing as the data set's pixels: for one-channel (digit-like) data, fitted into MNIST's 20x20 box and
// centred by mass; otherwise the whole canvas scaled down.
function pixelsFromDrawing() {
  const [h, w, c] = state.net.image_shape;
  const { width: W, height: H } = drawCanvas;
  const ink = drawCtx.getImageData(0, 0, W, H).data;
  let top = H, bottom = -1, left = W, right = -1;
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) {
    if (ink[(y * W + x) * 4] > 16) { top = Math.min(top, y); bottom = Math.max(bottom, y); left = Math.min(left, x); right = Math.max(right, x); }
  }
  const small = blackCanvas(w, h);
  const ctx = small.getContext("2d");
  ctx.imageSmoothingQuality = "high";
  if (bottom < 0) return new Uint8Array(h * w * c);
  if (c === 1) {
    const bw = right - left + 1, bh = bottom - top + 1;
    const scale = (Math.min(h, w) * MNIST_BOX) / Math.max(bw, bh);
    ctx.drawImage(drawCanvas, left, top, bw, bh, (w - bw * scale) / 2, (h - bh * scale) / 2, bw * scale, bh * scale);
    const [my, mx] = centreOfMass(ctx.getImageData(0, 0, w, h).data, h, w);
    const sctx = blackCanvas(w, h).getContext("2d");
    sctx.drawImage(small, Math.round((w - 1) / 2 - mx), Math.round((h - 1) / 2 - my));
    return pixelsOf(sctx, h, w, c);
  }
  ctx.drawImage(drawCanvas, 0, 0, W, H, 0, 0, w, h);
  return pixelsOf(ctx, h, w, c);
}

function blackCanvas(w, h) {
  const canvas = el("canvas", { width: w, height: h });
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, w, h);
  return canvas;
}

function centreOfMass(rgba, h, w) {
  let total = 0, sy = 0, sx = 0;
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    const v = rgba[(y * w + x) * 4];
    total += v; sy += v * y; sx += v * x;
  }
  return total ? [sy / total, sx / total] : [(h - 1) / 2, (w - 1) / 2];
}

// A canvas's pixels as H x W x C uint8 (grey by luminance for one channel).
function pixelsOf(ctx, h, w, c) {
  const rgba = ctx.getImageData(0, 0, w, h).data;
  const out = new Uint8Array(h * w * c);
  for (let p = 0; p < h * w; p++) {
    if (c === 1) out[p] = Math.round(0.299 * rgba[p * 4] + 0.587 * rgba[p * 4 + 1] + 0.114 * rgba[p * 4 + 2]);
    else for (let k = 0; k < c; k++) out[p * c + k] = rgba[p * 4 + k];
  }
  return out;
}

// uint8 pixels (H x W x C; the data set's shape unless given) on a canvas of that size.
function paintPixels(pixels, shape = state.net.image_shape) {
  const [h, w, c] = shape;
  const small = el("canvas", { width: w, height: h });
  const ctx = small.getContext("2d");
  const image = ctx.createImageData(w, h);
  for (let p = 0; p < h * w; p++) {
    const rgb = c === 1 ? [pixels[p], pixels[p], pixels[p]] : [pixels[p * c], pixels[p * c + 1], pixels[p * c + 2]];
    image.data.set([...rgb, 255], p * 4);
  }
  ctx.putImageData(image, 0, 0);
  return small;
}

function setPixels(pixels, source) {
  state.pixels = pixels;
  state.source = source;
  const preview = byId("input-preview");
  const painted = paintPixels(pixels);
  preview.width = painted.width;
  preview.height = painted.height;
  preview.getContext("2d").drawImage(painted, 0, 0);
  if (source !== "drawn") {
    clearDrawing();
    drawCtx.imageSmoothingEnabled = false;
    drawCtx.drawImage(painted, 0, 0, drawCanvas.width, drawCanvas.height);
  }
}

async function showTestImage(index) {
  try {
    const image = await api(`/api/test-image?index=${index}`);
    state.testCount = image.count;
    byId("test-index").value = image.index;
    byId("input-note").textContent = `test image #${image.index}: labelled ${state.net.class_names[image.label]}`;
    setPixels(fromBase64(image.pixels), "test");
    showError("");
    await update();
  } catch (error) {
    showError(error.message);
  }
}

byId("clear").addEventListener("click", () => {
  clearDrawing();
  byId("input-note").textContent = "Draw with the mouse or a finger: light strokes on black, like MNIST's digits.";
  setPixels(new Uint8Array(state.net.image_shape.reduce((a, b) => a * b)), "drawn");
  update();
});
byId("pick-test").addEventListener("click", () => showTestImage(Number(byId("test-index").value) || 0));
byId("random-test").addEventListener("click", async () => {
  if (state.testCount === null) await showTestImage(0);
  if (state.testCount) showTestImage(Math.floor(Math.random() * state.testCount));
});
// An upload is decoded by the server, with the decoder `jaxcnn predict` uses (EXIF orientation, transparency
// on black, the run's size and channels), so a file means the same on the page and on the command line.
byId("upload").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (!file) return;
  try {
    const bytes = new Uint8Array(await file.arrayBuffer());
    const answer = await api("/api/decode", { file: toBase64(bytes), name: file.name });
    const [h, w, c] = state.net.image_shape;
    byId("input-note").textContent = `uploaded ${file.name}, resized to ${h}x${w}${c === 1 ? " grey" : ""}`;
    setPixels(fromBase64(answer.pixels), "upload");
    showError("");
    await update();
  } catch (error) {
    showError(error.message);
  }
});

// ------------------------------------------------------------------ prediction and feature maps

async function predictOnly() {
  const seq = ++state.seq;
  stats.seq = seq;
  const answer = await api("/api/predict", { pixels: toBase64(state.pixels) });
  if (seq === state.seq) renderPrediction(answer.probabilities);
  return seq;
}

async function update(started) {
  document.body.dataset.busy = "true";
  const seq = ++state.seq;
  stats.seq = seq;
  const pixels = toBase64(state.pixels);
  try {
    const answer = await api("/api/predict", { pixels });
    if (seq !== state.seq) return;
    renderPrediction(answer.probabilities);
    if (started !== undefined) {
      const ms = performance.now() - started;
      stats.lastLatencyMs = ms;
      stats.latencies.push(ms);
      byId("latency").textContent = `updated ${ms.toFixed(0)} ms after the stroke ended`;
    }
    const maps = await api("/api/activations", { pixels });
    if (seq !== state.seq) return;
    state.maps = maps;
    renderMaps(maps);
    if (state.explainTarget) await explain(state.explainTarget);
    await renderWhy(seq);
    showError("");
  } catch (error) {
    showError(error.message);
  } finally {
    if (seq === state.seq) {
      stats.renderedSeq = seq;
      document.body.dataset.busy = "false";
    }
  }
}

function renderPrediction(probabilities) {
  const names = state.net.class_names;
  const order = probabilities.map((p, i) => [p, i]).sort((a, b) => b[0] - a[0]).slice(0, TOP_CLASSES);
  const list = byId("prediction");
  list.replaceChildren(...order.map(([p, i]) => {
    const bar = el("span", { class: "bar" });
    bar.style.width = `${(100 * p).toFixed(1)}%`;
    const row = el("li", { testid: "prediction-row", "data-class-index": i, "data-probability": p },
      el("span", { class: "name", text: names[i] }), el("span", { class: "track" }, bar),
      el("span", { class: "pct", text: `${(100 * p).toFixed(1)}%` }));
    return row;
  }));
  list.dataset.top = order[0][1];
  stats.lastPrediction = probabilities;
}

function renderNetwork(net) {
  const table = byId("network-table");
  const head = el("tr", {}, ...["#", "layer", "type", "output", "settings", "weights"].map((t) => el("th", { text: t })));
  const rows = [el("tr", { testid: "row-input" }, el("td"), el("td", { text: "input" }), el("td"),
    el("td", { text: net.input_shape.join("x") }), el("td"), el("td"))];
  for (const layer of net.layers) {
    const reads = layer.inputs && !layer.merges ? `from ${layer.inputs.join(", ")}; ` : "";  // a merge's settings name them
    rows.push(el("tr", { testid: `row-${layer.name}` }, el("td", { text: layer.index }), el("td", { text: layer.name }),
      el("td", { text: layer.type }), el("td", { text: layer.output_shape.join("x") }),
      el("td", { text: reads + layer.settings }), el("td", { text: layer.params.toLocaleString("en") })));
  }
  const total = net.layers.reduce((s, l) => s + l.params, 0);
  rows.push(el("tr", { class: "total" }, el("td"), el("td", { text: "total" }), el("td"), el("td"), el("td"),
    el("td", { text: total.toLocaleString("en") })));
  table.replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
  if (net.filters) {
    const kernel = floats(net.filters);
    const [fh, fw, cin, cout] = kernel.shape;
    const scale = largest(kernel.values);
    const canvases = [];
    for (let o = 0; o < cout; o++) {
      const one = new Float32Array(fh * fw * cin);
      for (let p = 0; p < fh * fw; p++) for (let k = 0; k < cin; k++) one[p * cin + k] = kernel.values[(p * cin + k) * cout + o];
      const canvas = mapCanvas(one, fh, fw, cin, 0, scale, cin === 3);
      canvas.classList.add("filter");
      canvas.dataset.testid = `filter-${o}`;
      canvas.title = `${net.filters.layer} filter ${o}: click to see what it looks for`;
      canvas.addEventListener("click", () => showUnit(net.filters.layer, o));
      canvases.push(canvas);
    }
    byId("filters").replaceChildren(el("h3", { text: `${net.filters.layer}: its ${cout} filters of ${fh}x${fw}x${cin}` }),
      el("div", { class: "maps" }, ...canvases));
  }
  const panels = [panel("input", "input", net.input_shape, false)];
  for (const layer of net.layers) panels.push(panel(layer.name, layer.type, layer.output_shape, layer.explains));
  byId("layers").replaceChildren(...panels);
}

function panel(name, type, shape, explains) {
  const note = explains ? " (click a pixel)" : "";
  return el("div", { class: "layer", testid: `layer-${name}`, "data-explains": explains },
    el("h3", { text: `${name} ${type === "input" ? "" : type} ${shape.join("x")}${note}` }),
    el("div", { class: "maps" }));
}

function renderMaps(maps) {
  const all = { input: maps.input, ...maps.layers };
  for (const [name, encoded] of Object.entries(all)) {
    const box = byId(`layer-${name}`);
    if (!box) continue;
    const { shape, values } = floats(encoded);
    const scale = largest(values);
    const holder = box.querySelector(".maps");
    const canvases = [];
    if (shape.length === 3) {
      const [h, w, c] = shape;
      for (let k = 0; k < Math.min(c, MAX_CHANNELS); k++) {
        const canvas = mapCanvas(values, h, w, c, k, scale);
        canvas.classList.add("map");
        canvas.dataset.testid = `map-${name}-${k}`;
        canvas.title = `${name} channel ${k}`;
        if (box.dataset.explains === "true") {
          canvas.addEventListener("click", (event) => {
            const row = Math.min(h - 1, Math.floor((event.offsetY / canvas.clientHeight) * h));
            const col = Math.min(w - 1, Math.floor((event.offsetX / canvas.clientWidth) * w));
            explain({ layer: name, row, col, channel: k });
          });
        }
        canvases.push(canvas);
      }
      if (c > MAX_CHANNELS) canvases.push(el("span", { class: "note", text: `first ${MAX_CHANNELS} of ${c} channels` }));
    } else {
      const canvas = mapCanvas(values, 1, values.length, 1, 0, scale);
      canvas.classList.add("vector");
      canvas.dataset.testid = `map-${name}`;
      canvases.push(canvas);
    }
    holder.replaceChildren(...canvases);
  }
}

// ------------------------------------------------------------------ why: one pixel's arithmetic

async function explain(target) {
  state.explainTarget = target;
  try {
    const answer = await api("/api/explain", { pixels: toBase64(state.pixels), ...target });
    renderExplain(answer);
    showError("");
  } catch (error) {
    showError(error.message);
  }
}

function valueCell(v, extra = {}) {
  return el("td", { "data-value": v === null ? "" : v, text: fmt(v), ...extra });
}

function grid(values, inside, classFor = () => "", testid = "") {
  return el("table", { class: "grid", ...(testid ? { testid } : {}) }, ...values.map((row, i) => el("tr", {},
    ...row.map((v, j) => valueCell(inside[i][j] ? v : null, { class: `${inside[i][j] ? "" : "pad"} ${classFor(i, j)}` })))));
}

function pick(array3, k) {
  return array3.map((row) => row.map((cell) => cell[k]));
}

function windowPicture(answer) {
  // The layer's input (first channel of the window), with the window outlined.
  if (!state.maps) return el("span");
  const encoded = answer.input_layer === "input" ? state.maps.input : state.maps.layers[answer.input_layer];
  const { shape, values } = floats(encoded);
  const [h, w, c] = shape;
  const zoom = Math.max(2, Math.floor(160 / Math.max(h, w)));
  const canvas = el("canvas", { width: w * zoom, height: h * zoom, class: "window", testid: "explain-window" });
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(mapCanvas(values, h, w, c, answer.input_channels[0], largest(values)), 0, 0, w * zoom, h * zoom);
  const r0 = answer.rows[0], r1 = answer.rows[answer.rows.length - 1];
  const c0 = answer.cols[0], c1 = answer.cols[answer.cols.length - 1];
  ctx.strokeStyle = "#c00";
  ctx.lineWidth = 2;
  ctx.strokeRect(c0 * zoom, r0 * zoom, (c1 - c0 + 1) * zoom, (r1 - r0 + 1) * zoom);
  return el("figure", {}, canvas, el("figcaption", { text: `${answer.input_layer}, channel ${answer.input_channels[0]}: the window` }));
}

function renderExplain(answer) {
  byId("explain-card").hidden = false;
  const where = `${answer.layer} at row ${answer.row}, column ${answer.col}, channel ${answer.channel}`;
  const parts = [el("h3", { text: where }), windowPicture(answer)];
  const layerValue = el("p", { testid: "explain-layer-value", "data-value": answer.layer_value,
    text: `The layer's output there (from the forward pass): ${fmt(answer.layer_value)}` });
  if (answer.kind === "conv") {
    const shown = Math.min(answer.input_channels.length, MAX_EXPLAIN_CHANNELS);
    const count = answer.products.length * answer.products[0].length * answer.input_channels.length;
    for (let k = 0; k < shown; k++) {
      parts.push(el("div", { class: "explain-row", testid: "explain-channel" },
        el("span", { class: "label", text: `input channel ${answer.input_channels[k]}` }),
        grid(pick(answer.window, k), answer.inside), el("span", { class: "op", text: "×" }),
        grid(pick(answer.kernel, k), answer.inside.map((r) => r.map(() => true))), el("span", { class: "op", text: "=" }),
        grid(pick(answer.products, k), answer.inside.map((r) => r.map(() => true)), () => "", "explain-products")));
    }
    let rest = 0;
    for (let k = shown; k < answer.input_channels.length; k++) for (const row of pick(answer.products, k)) for (const v of row) rest += v;
    if (shown < answer.input_channels.length) {
      parts.push(el("p", { testid: "explain-rest", "data-value": rest,
        text: `input channels ${answer.input_channels[shown]} to ${answer.input_channels.at(-1)}: their products sum to ${fmt(rest)}` }));
    }
    const act = answer.activation === "linear" ? "" : `${answer.activation}(${fmt(answer.pre_activation)}) = `;
    parts.push(el("p", { class: "equation" },
      el("span", { testid: "explain-sum", "data-value": answer.sum, text: `sum of the ${count} products = ${fmt(answer.sum)}` }),
      el("span", { testid: "explain-bias", "data-value": answer.bias, text: ` + bias ${fmt(answer.bias)}` }),
      el("span", { testid: "explain-pre", "data-value": answer.pre_activation, text: ` = ${fmt(answer.pre_activation)}; ` }),
      el("span", { testid: "explain-output", "data-value": answer.output, text: `${act}${fmt(answer.output)}` })));
  } else {
    const kept = answer.kept || [-1, -1];
    parts.push(el("div", { class: "explain-row", testid: "explain-channel" },
      grid(answer.window, answer.inside, (i, j) => (i === kept[0] && j === kept[1] ? "kept" : ""), "explain-products")));
    const text = answer.kind === "max_pool" ? `the largest value in the window: ${fmt(answer.output)}`
      : `the mean: ${fmt(answer.sum)} / ${answer.count} = ${fmt(answer.output)}`;
    parts.push(el("p", { class: "equation" }, el("span", { testid: "explain-output", "data-value": answer.output, text })));
  }
  parts.push(layerValue);
  const box = byId("explain");
  Object.assign(box.dataset, { layer: answer.layer, row: answer.row, col: answer.col, channel: answer.channel });
  box.replaceChildren(...parts);
}

// ------------------------------------------------------------------ why this answer: saliency heatmaps

const METHOD_NAMES = { "gradient": "gradient", "smoothgrad": "SmoothGrad", "integrated-gradients": "integrated gradients",
  "grad-cam": "Grad-CAM", "occlusion": "occlusion" };

function options(select, entries, chosen) {
  select.replaceChildren(...entries.map(([value, text]) => el("option", { value, text })));
  select.value = chosen;
}

function setupWhy(net) {
  const why = net.explain;
  options(byId("why-method"), why.methods.map((m) => [m, METHOD_NAMES[m] || m]), why.default_method);
  byId("why-layer").disabled = why.default_method !== "grad-cam";
  options(byId("why-class"), [["", "the predicted class"], ...net.class_names.map((n, i) => [String(i), n])], "");
  options(byId("why-layer"), why.spatial_layers.map((n) => [n, n]), why.spatial_layers.at(-1));
  const random = why.weighted_layers.map((_, k) => [String(k + 1), k + 1 === why.weighted_layers.length
    ? "all random" : `random: ${why.weighted_layers.slice(0, k + 1).join(", ")}`]);
  options(byId("why-randomize"), [["0", "trained"], ...random], "0");
  const [pr, pg, pb] = why.colours.positive, [nr, ng, nb] = why.colours.negative;
  for (const swatch of document.querySelectorAll(".swatch.positive")) swatch.style.background = `rgb(${pr},${pg},${pb})`;
  for (const swatch of document.querySelectorAll(".swatch.negative")) swatch.style.background = `rgb(${nr},${ng},${nb})`;
  for (const id of ["why-method", "why-class", "why-layer", "why-randomize"]) {
    byId(id).addEventListener("change", () => { byId("why-layer").disabled = byId("why-method").value !== "grad-cam"; renderWhy(); });
  }
  byId("unit-card").hidden = !why.unit_layers.length;
  if (why.unit_layers.length) options(byId("unit-layer"), why.unit_layers.map((l) => [l.name, `${l.name} (${l.units} units)`]), why.unit_layers[0].name);
  byId("unit-show").addEventListener("click", () => showUnit(byId("unit-layer").value, Number(byId("unit-index").value) || 0));
}

// The image as the network sees it, under the heatmap: the colour as opaque as |value| / the largest |value|
// (the same drawing as `jaxcnn explain`'s PNGs, jaxcnn.explanations.overlay).
function overlayCanvas(pixels, shape, heat) {
  const [h, w, c] = shape;
  const { colours, opacity } = state.net.explain;
  const scale = largest(heat);
  const canvas = byId("why-heatmap");
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(w, h);
  for (let p = 0; p < h * w; p++) {
    const grey = c === 1 ? [pixels[p], pixels[p], pixels[p]] : [pixels[p * c], pixels[p * c + 1], pixels[p * c + 2]];
    const v = heat[p], alpha = scale > 0 ? opacity * Math.min(1, Math.abs(v) / scale) : 0;
    const colour = v >= 0 ? colours.positive : colours.negative;
    image.data.set([0, 1, 2].map((k) => Math.round(grey[k] * (1 - alpha) + colour[k] * alpha)).concat(255), p * 4);
  }
  ctx.putImageData(image, 0, 0);
}

async function renderWhy(seq) {
  if (!state.pixels) return;
  const method = byId("why-method").value;
  const chosen = byId("why-class").value;
  const request = { pixels: toBase64(state.pixels), method, class: chosen === "" ? null : Number(chosen),
    layer: method === "grad-cam" ? byId("why-layer").value : null, randomize: Number(byId("why-randomize").value) };
  const started = performance.now();
  const mine = ++state.whySeq; // the latest request wins, whichever answer comes back first
  try {
    const answer = await api("/api/why", request);
    if (mine !== state.whySeq || (seq !== undefined && seq !== state.seq)) return;
    const heat = floats(answer.heatmap);
    overlayCanvas(fromBase64(answer.pixels), answer.shape, heat.values);
    const names = state.net.class_names;
    const weights = answer.randomized.length ? `, with random weights in ${answer.randomized.join(", ")}` : "";
    const where = answer.layer ? ` on ${answer.layer}` : "";
    const ms = performance.now() - started;
    byId("why-note").textContent = `${METHOD_NAMES[method]}${where} for ${names[answer.class]}` +
      (answer.class === answer.predicted ? " (the prediction)" : ` (predicted: ${names[answer.predicted]})`) +
      `${weights}; ${ms.toFixed(0)} ms`;
    state.why = { ...answer, heatmap: Array.from(heat.values), roundTripMs: ms };
    Object.assign(byId("why-card").dataset, { method, randomize: request.randomize, class: chosen, seq: mine });
    showError("");
  } catch (error) {
    showError(error.message);
  }
}

// ------------------------------------------------------------------ what a filter looks for

async function showUnit(layer, unit) {
  byId("unit-layer").value = layer;
  byId("unit-index").value = unit;
  const box = byId("unit");
  box.replaceChildren(el("p", { class: "note", text: `drawing ${layer} unit ${unit} ...` }));
  try {
    const answer = await api("/api/unit", { layer, unit });
    const picture = paintPixels(fromBase64(answer.picture), answer.shape);
    picture.classList.add("pixels", "unit-picture");
    picture.dataset.testid = "unit-picture";
    const parts = [el("figure", {}, picture, el("figcaption", { text: `${layer} unit ${unit}: its picture (${answer.milliseconds.toFixed(0)} ms)` }))];
    if (answer.top) {
      const names = state.net.class_names;
      parts.push(el("figure", {}, el("div", { class: "thumbs" }, ...answer.top.map((t) => {
        const thumb = paintPixels(fromBase64(t.pixels));
        thumb.classList.add("pixels", "thumb");
        thumb.dataset.testid = "unit-top-image";
        thumb.dataset.index = t.index;
        thumb.title = `test image #${t.index} (${names[t.label]}): ${fmt(t.value)}`;
        thumb.addEventListener("click", () => showTestImage(t.index));
        return thumb;
      })), el("figcaption", { text: `the ${answer.top.length} test images that excite it most` })));
    } else {
      parts.push(el("p", { class: "note", text: answer.top_note }));
    }
    box.replaceChildren(...parts);
    Object.assign(box.dataset, { layer, unit });
    state.unit = answer;
    showError("");
  } catch (error) {
    box.replaceChildren();
    showError(error.message);
  }
}

// ------------------------------------------------------------------ the run: curves and confusion matrix

function lineChart(title, series, epochs) {
  const W = 320, H = 190, P = 32, TOP = 44;
  const all = series.flatMap((s) => s.values).filter((v) => Number.isFinite(v));
  if (!all.length) return el("span");
  let lo = Math.min(...all), hi = Math.max(...all);
  if (hi === lo) { hi += 0.5; lo -= 0.5; }
  const x = (i) => P + (epochs.length > 1 ? (i * (W - 2 * P)) / (epochs.length - 1) : (W - 2 * P) / 2);
  const y = (v) => H - P + ((lo - v) * (H - P - TOP)) / (hi - lo);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("class", "chart");
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    svg.append(node);
  };
  add("text", { x: W / 2, y: 16, "text-anchor": "middle", class: "title" }, title);
  add("line", { x1: P, y1: H - P, x2: W - P, y2: H - P, class: "axis" });
  add("line", { x1: P, y1: TOP, x2: P, y2: H - P, class: "axis" });
  add("text", { x: P - 4, y: y(hi) + 4, "text-anchor": "end" }, fmt(hi));
  add("text", { x: P - 4, y: y(lo) + 4, "text-anchor": "end" }, fmt(lo));
  add("text", { x: W / 2, y: H - 8, "text-anchor": "middle" }, `epoch (1 to ${epochs.length})`);
  series.forEach((s, n) => {
    const points = s.values.map((v, i) => `${x(i)},${y(v)}`).join(" ");
    add("polyline", { points, class: `series s${n}` });
    s.values.forEach((v, i) => add("circle", { cx: x(i), cy: y(v), r: 2.5, class: `series s${n}` }));
    add("text", { x: P + 70 * n, y: 32, class: `legend s${n}` }, `— ${s.name}`);
  });
  return svg;
}

function renderCurves(metrics) {
  if (!metrics.length) {
    byId("curves").replaceChildren(el("p", { class: "note", text: "no epochs recorded yet" }));
    return;
  }
  const epochs = metrics.map((m) => m.epoch);
  const column = (key) => metrics.map((m) => m[key]);
  const accuracy = [{ name: "train", values: column("train_accuracy") }, { name: "test", values: column("test_accuracy") }];
  if (metrics[0].test_accuracy_ema !== undefined) accuracy.push({ name: "test (EMA)", values: column("test_accuracy_ema") });
  const loss = [{ name: "train", values: column("train_loss") }, { name: "test", values: column("test_loss") }];
  byId("curves").replaceChildren(lineChart("accuracy", accuracy, epochs), lineChart("loss", loss, epochs));
}

async function renderConfusion() {
  const holder = byId("confusion");
  let answer;
  try {
    answer = await api("/api/confusion");
  } catch (error) {
    holder.replaceChildren(el("p", { class: "note", text: error.message }));
    return;
  }
  const names = answer.class_names;
  const counts = answer.counts;
  let most = 1;
  counts.forEach((row, t) => row.forEach((n, p) => { if (t !== p) most = Math.max(most, n); }));
  const head = el("tr", {}, el("th", { text: "true \\ predicted" }), ...names.map((n) => el("th", { text: n })));
  const rows = counts.map((row, t) => el("tr", {}, el("th", { text: names[t] }), ...row.map((n, p) => {
    const cell = el("td", { testid: `cell-${t}-${p}`, "data-count": n, text: n, class: t === p ? "diagonal" : "" });
    if (t !== p && n) cell.style.background = `rgba(220, 90, 20, ${(0.15 + (0.85 * n) / most).toFixed(2)})`;
    cell.addEventListener("click", () => showCell(t, p));
    return cell;
  })));
  holder.replaceChildren(el("p", { text: `test accuracy ${(100 * answer.accuracy).toFixed(2)}%` }),
    el("table", { class: "confusion" }, el("thead", {}, head), el("tbody", {}, ...rows)));
}

async function showCell(t, p) {
  try {
    const cell = await api(`/api/confusion-cell?true=${t}&predicted=${p}`);
    const names = state.net.class_names;
    const shown = cell.images.length < cell.count ? ` (the first ${cell.images.length} shown)` : "";
    const count = byId("cell-count");
    count.textContent = `${cell.count} test images of ${names[t]} predicted as ${names[p]}${shown}. Click one to explore it.`;
    count.dataset.count = cell.count;
    byId("cell-images").replaceChildren(...cell.images.map((pixels, i) => {
      const canvas = paintPixels(fromBase64(pixels));
      canvas.classList.add("pixels", "thumb");
      canvas.dataset.testid = "cell-image";
      canvas.title = `test image #${cell.indices[i]}`;
      canvas.addEventListener("click", () => showTestImage(cell.indices[i]));
      return canvas;
    }));
  } catch (error) {
    showError(error.message);
  }
}

// ------------------------------------------------------------------ start

async function start() {
  try {
    state.net = await api("/api/network");
  } catch (error) {
    showError(`cannot load the run: ${error.message}`);
    return;
  }
  const net = state.net;
  const best = net.metrics.length ? Math.max(...net.metrics.map((m) => m.test_accuracy)) : null;
  byId("run-title").textContent = `${net.run}: ${net.spec}, epoch ${net.epoch}` +
    (best === null ? "" : `, best test accuracy ${(100 * best).toFixed(2)}%`) + ` (${net.dataset})`;
  clearDrawing();
  renderNetwork(net);
  setupWhy(net);
  renderCurves(net.metrics);
  setPixels(new Uint8Array(net.image_shape.reduce((a, b) => a * b)), "drawn");
  await update();
  stats.ready = true;
  renderConfusion();
}

start();
