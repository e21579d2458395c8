// The sentiment-lab page: sends the review to /v1/predict (and /v1/explain) and shows the answer.
// Every string from the user or the model is rendered with textContent, never as HTML, so a review
// containing <script> is shown as text and cannot run.
"use strict";

const $ = (id) => document.getElementById(id);
let explainAvailable = false;
let infoLoaded = false;

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h["X-API-Key"] = key;
  return h;
}

async function call(method, path, body) {
  const response = await fetch(path, { method, headers: headers(), body: body && JSON.stringify(body) });
  let data = null;
  try {
    data = await response.json();
  } catch (_) {
    data = null;
  }
  if (!response.ok) {
    if (response.status === 401) $("key-row").hidden = false;
    const detail = data && data.detail;
    const message = typeof detail === "string" ? detail : detail ? JSON.stringify(detail) : response.statusText;
    const error = new Error(`${response.status}: ${message}`);
    error.status = response.status;
    throw error;
  }
  return data;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function loadModelInfo() {
  try {
    const info = await call("GET", "/v1/model");
    const m = info.model || {};
    const parts = [m.model_dir, m.backend && `backend ${m.backend}`, m.max_length && `max ${m.max_length} tokens`];
    if (typeof m.review_threshold === "number") parts.push(`review below ${Math.round(m.review_threshold * 100)}%`);
    $("model-info").textContent = parts.filter(Boolean).join(" · ") || "model loaded";
    explainAvailable = Boolean(info.explain);
    $("explain-toggle").hidden = !explainAvailable;
    infoLoaded = true;
  } catch (err) {
    $("model-info").textContent = err.status === 401 ? "enter the API key to use this server" : String(err.message);
  }
}

// A model of more than two classes: one bar per class, the predicted one first, then by probability.
function showClassBars(p) {
  const box = $("class-probs");
  box.replaceChildren();
  const entries = Object.entries(p.probs).sort((a, b) => b[1] - a[1]);
  for (const [name, prob] of entries) {
    const row = document.createElement("div");
    row.className = name === p.label ? "class-row top" : "class-row";
    const label = document.createElement("span");
    label.className = "class-name";
    label.textContent = name;
    const bar = document.createElement("div");
    bar.className = "bar class-bar";
    bar.setAttribute("role", "progressbar");
    bar.setAttribute("aria-label", `probability of ${name}`);
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "100");
    const percent = Math.round(prob * 1000) / 10;
    bar.setAttribute("aria-valuenow", String(percent));
    const fill = document.createElement("div");
    fill.className = "bar-fill class-fill";
    fill.style.width = `${percent}%`;
    bar.append(fill);
    const value = document.createElement("span");
    value.className = "class-value muted";
    value.textContent = `${percent}%`;
    row.append(label, bar, value);
    box.append(row);
  }
  box.hidden = false;
}

function showPrediction(p) {
  const manyClasses = p.probs && Object.keys(p.probs).length > 2;
  if (manyClasses) {
    const percent = Math.round(p.score * 1000) / 10;
    $("label").textContent = p.label;
    $("label").className = "label";
    $("confidence").textContent = `${percent}% confidence`;
    document.querySelector("#result > .bar").hidden = true;
    showClassBars(p);
    $("needs-review").hidden = !p.needs_review;
    $("review-note").hidden = !p.needs_review;
    $("result").hidden = false;
    return;
  }
  document.querySelector("#result > .bar").hidden = false;
  $("class-probs").hidden = true;
  const positive = p.label.toUpperCase() === "POSITIVE";
  const kind = positive ? "positive" : "negative";
  const percent = Math.round(p.score * 1000) / 10;
  $("label").textContent = p.label;
  $("label").className = `label ${kind}`;
  $("confidence").textContent = `${percent}% confidence · P(positive) ${p.prob_pos.toFixed(3)}`;
  $("bar-fill").style.width = `${percent}%`;
  $("bar-fill").className = `bar-fill ${kind}`;
  document.querySelector(".bar").setAttribute("aria-valuenow", String(percent));
  $("needs-review").hidden = !p.needs_review;
  $("review-note").hidden = !p.needs_review;
  $("result").hidden = false;
}

function showHighlights(explanation) {
  const box = $("highlights");
  box.replaceChildren();
  const scale = Math.max(1e-9, ...explanation.words.map((w) => Math.abs(w.score)));
  for (const word of explanation.words) {
    const span = document.createElement("span");
    span.className = "tok";
    span.textContent = word.text;
    const alpha = Math.min(1, Math.abs(word.score) / scale) * 0.75;
    const rgb = word.score > 0 ? "22, 163, 74" : "220, 38, 38";
    span.style.backgroundColor = `rgba(${rgb}, ${alpha.toFixed(2)})`;
    span.title = `${word.score > 0 ? "+" : ""}${word.score.toFixed(3)}`;
    box.append(span, " ");
  }
  // a model of more than two classes explains one class (the predicted one unless asked): name it
  $("binary-key").hidden = Boolean(explanation.target);
  $("target-key").hidden = !explanation.target;
  $("target-name").textContent = explanation.target || "";
  $("truncated-note").hidden = !explanation.truncated;
  $("highlights-section").hidden = false;
}

async function predict(event) {
  event.preventDefault();
  const text = $("review").value;
  showError("");
  $("highlights-section").hidden = true;
  if (!text.trim()) {
    showError("Type a review first.");
    return;
  }
  $("predict").disabled = true;
  $("status").textContent = "predicting…";
  try {
    if (!infoLoaded) await loadModelInfo(); // an API key may have just been entered
    const data = await call("POST", "/v1/predict", { texts: [text] });
    showPrediction(data.predictions[0]);
    if (explainAvailable && $("explain").checked) {
      $("status").textContent = "explaining…";
      showHighlights(await call("POST", "/v1/explain", { text }));
    }
  } catch (err) {
    showError(err.message);
  } finally {
    $("predict").disabled = false;
    $("status").textContent = "";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("predict-form").addEventListener("submit", predict);
  loadModelInfo();
});
