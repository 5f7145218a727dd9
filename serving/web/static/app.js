// The dnsvr search page: sends queries to this page's server (/api/...) and draws the ranked hits.
// Plain JS, no build step; every string from the server goes in through textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function showMessage(text, isError) {
  const box = $("message");
  box.textContent = text;
  box.className = isError ? "message error" : "message";
  box.hidden = false;
}

function options() {
  return new URLSearchParams({ top_k: $("top-k").value || "10", rerank: $("rerank").value || "0.1" });
}

async function call(url, init) {
  let response;
  try {
    response = await fetch(url, init);
  } catch (error) {
    throw new Error("the page's server cannot be reached: " + error.message);
  }
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(body.error || "request failed (" + response.status + ")");
  return body;
}

async function search(url, init, busyText) {
  showMessage(busyText, false);
  try {
    const result = await call(url, init);
    $("message").hidden = true;
    render(result);
  } catch (error) {
    $("results").hidden = true;
    showMessage(error.message, true);
  }
}

function track(bars, label, title) {
  const row = element("div", "track-row");
  row.appendChild(element("span", "track-label", label));
  const line = element("div", "track");
  line.title = title;
  row.appendChild(line);
  for (const bar of bars) {
    const span = element("div", "segment");
    span.style.left = bar.left_pct + "%";
    span.style.width = bar.width_pct + "%";
    span.style.opacity = String(0.35 + 0.65 * Math.max(0, Math.min(1, bar.confidence)));
    span.title = bar.start_s.toFixed(1) + "–" + bar.end_s.toFixed(1) + " s, confidence " + bar.confidence.toFixed(2);
    line.appendChild(span);
  }
  return row;
}

function cell(row, text, className) {
  const td = element("td", className, text);
  row.appendChild(td);
  return td;
}

function hitRow(hit, rank) {
  const row = element("tr", "hit");
  cell(row, String(rank), "num");
  const thumb = cell(row, "", "thumb");
  if (hit.thumbnail) {
    const image = element("img");
    image.src = hit.thumbnail;
    image.alt = "middle frame of " + hit.video_id;
    thumb.appendChild(image);
  } else {
    thumb.appendChild(element("div", "placeholder", "no frame"));
    thumb.title = "no thumbnail stored for this video (indexed before thumbnails existed)";
  }
  cell(row, hit.video_id, "video-id");
  cell(row, hit.score.toFixed(4), "num");
  const reranked = cell(row, "");
  reranked.appendChild(element("span", hit.reranked ? "badge yes" : "badge no", hit.reranked ? "yes" : "no"));
  cell(row, hit.coarse_score.toFixed(4), "num");
  cell(row, hit.selector_score === null ? "—" : hit.selector_score.toFixed(3), "num");
  const timeline = cell(row, "", "timeline hit-timeline");
  timeline.appendChild(track(hit.query_bars, "query", "query (0–" + hit.query_scale_s.toFixed(1) + " s)"));
  timeline.appendChild(track(hit.target_bars, "target", "target (0–" + hit.target_scale_s.toFixed(1) + " s)"));
  if (hit.segments.length === 0) {
    timeline.appendChild(element("div", "no-segments", hit.reranked ? "no segments returned" : "not re-ranked: no segments"));
  }
  return row;
}

function render(result) {
  $("query-label").textContent = result.query.label + " — " + result.hits.length + " hits";
  const strip = $("filmstrip");
  strip.replaceChildren();
  for (const url of result.query.thumbnails) {
    const image = element("img");
    image.src = url;
    image.alt = "query frame";
    strip.appendChild(image);
  }
  const queryTimeline = $("query-timeline");
  queryTimeline.querySelectorAll(".track-row").forEach((node) => node.remove());
  const matched = result.hits.flatMap((hit) => hit.query_bars);
  queryTimeline.appendChild(track(matched, "matched", "query: segments matched by any hit"));
  const body = $("hits").querySelector("tbody");
  body.replaceChildren(...result.hits.map((hit, index) => hitRow(hit, index + 1)));
  const timings = Object.entries(result.timings_ms).map(([stage, ms]) => stage + " " + ms.toFixed(1));
  $("timings").textContent = "timings (ms): " + timings.join(", ");
  $("results").hidden = false;
}

function searchUpload(file) {
  if (!file) return;
  search("/api/search/upload?" + options(), {
    method: "POST", body: file, headers: { "Content-Type": "application/octet-stream" },
  }, "searching with " + file.name + " …");
}

async function loadStats() {
  try {
    const body = await call("/api/stats");
    const stats = body.stats;
    const parts = [stats.videos + " videos"];
    if (stats.frames !== undefined) parts.push(stats.frames + " frames");
    if (stats.milvus_version) parts.push(stats.milvus_version);
    parts.push(body.healthy ? "service healthy" : "service NOT healthy");
    parts.push("uploads up to " + body.max_upload);
    $("stats").textContent = parts.join(" · ");
  } catch (error) {
    $("stats").textContent = "stats unavailable: " + error.message;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const drop = $("drop-zone");
  $("video-file").addEventListener("change", (event) => searchUpload(event.target.files[0]));
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    searchUpload(event.dataTransfer.files[0]);
  });
  $("id-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const params = options();
    params.set("video_id", $("video-id").value.trim());
    search("/api/search/id?" + params, undefined, "searching …");
  });
  $("text-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const params = new URLSearchParams({ top_k: $("top-k").value || "10", text: $("text-query").value.trim() });
    search("/api/search/text?" + params, undefined, "searching …");
  });
  loadStats();
});
