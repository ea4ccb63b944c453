// KartPilot dashboard: polls /api/state and the latest frame, draws sticks and the histogram.
"use strict";

const $ = (id) => document.getElementById(id);
const STATE_MS = 200;
const FRAME_MS = 200;
let last = null;

function drawStick(canvas, action) {
  const ctx = canvas.getContext("2d");
  const r = canvas.width / 2;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.strokeStyle = "#555";
  ctx.beginPath(); ctx.arc(r, r, r - 2, 0, 2 * Math.PI); ctx.stroke();
  ctx.beginPath(); ctx.moveTo(r, 4); ctx.lineTo(r, 2 * r - 4); ctx.moveTo(4, r); ctx.lineTo(2 * r - 4, r); ctx.stroke();
  if (!action) return;
  // action = [x, y, a, b, rb]; y is up-positive, the canvas y axis points down.
  const x = r + action[0] * (r - 10), y = r - action[1] * (r - 10);
  ctx.fillStyle = "#e0a030";
  ctx.beginPath(); ctx.arc(x, y, 8, 0, 2 * Math.PI); ctx.fill();
  canvas.dataset.x = action[0].toFixed(3);
  canvas.dataset.y = action[1].toFixed(3);
}

function buttons(action) {
  if (!action) return "";
  return ["A", "B", "R"].filter((_, i) => action[2 + i] > 0.5).join(" ");
}

function drawHistogram(hist) {
  const box = $("histogram");
  const max = Math.max(1, ...hist.counts);
  if (box.children.length !== hist.counts.length) {
    box.innerHTML = "";
    hist.counts.forEach((_, i) => {
      const bar = document.createElement("div");
      bar.className = "bar";
      const label = document.createElement("span");
      label.textContent = i < hist.edges_ms.length ? "\u2264" + hist.edges_ms[i] : ">" + hist.edges_ms[i - 1];
      bar.appendChild(label);
      box.appendChild(bar);
    });
  }
  hist.counts.forEach((c, i) => {
    const bar = box.children[i];
    bar.style.height = (100 * c / max) + "%";
    bar.dataset.count = c;
    bar.title = c + " requests";
  });
}

// Telemetry values are numbers, or null where the plugin read NaN/Inf: shown as missing.
function drawTelemetry(portNo, tel) {
  const table = $("telemetry");
  $("telemetry-port").textContent = portNo === null ? "-" : portNo;
  table.innerHTML = "";
  Object.entries(tel || {}).forEach(([name, value]) => {
    const row = table.insertRow();
    const th = document.createElement("th");
    th.textContent = name;
    row.appendChild(th);
    const td = row.insertCell();
    td.dataset.name = name;
    if (value === null) {
      td.textContent = "missing";
      td.className = "muted missing";
    } else {
      td.textContent = Number.isInteger(value) ? String(value) : value.toPrecision(6);
    }
  });
}

// Commands (reset) per port: pending until the plugin confirms it, then confirmed.
function drawCommands(cmds) {
  const parts = Object.entries(cmds || {}).map(([port, c]) =>
    "port " + port + ": " + c.cmd + " " + c.state + (c.state === "confirmed" ? "" : " (sent " + c.sent + "\u00d7)"));
  $("reset-state").textContent = parts.join(", ");
}

function render(s) {
  last = s;
  $("conn").textContent = "live"; $("conn").className = "badge ok";
  $("mode").textContent = s.mode;
  document.querySelectorAll("#mode-buttons button").forEach((b) => b.classList.toggle("active", b.dataset.mode === s.mode));
  $("override").classList.toggle("hidden", !(s.lb_held && s.mode === "ai"));
  $("rps").textContent = s.req_per_s.toFixed(1);
  $("requests").textContent = s.requests;
  $("errors").textContent = s.errors;
  $("latency").textContent = s.latency_ms.p50 === null ? "-" : s.latency_ms.p50.toFixed(2) + " / " + s.latency_ms.p99.toFixed(2);
  $("corrections").textContent = s.corrections.frames + " frames, " + s.takeovers + " takeovers";
  $("recording").textContent = s.recording.on ? s.recording.frames + " frames \u2192 " + s.recording.path : "off";
  $("record").textContent = s.recording.on ? "Stop recording" : "Start recording";
  const port = s.ports[String(s.human_port)] || Object.values(s.ports)[0];
  drawStick($("stick-ai"), port ? port.ai : null);
  drawStick($("stick-human"), port ? port.human : null);
  $("btn-ai").textContent = buttons(port && port.ai);
  $("btn-human").textContent = buttons(port && port.human);
  $("driver").textContent = port ? port.driver : "-";
  const portNo = port ? (s.ports[String(s.human_port)] ? s.human_port : Object.keys(s.ports)[0]) : null;
  drawTelemetry(portNo, port ? port.telemetry : null);
  drawCommands(s.commands);
  if (port) $("frame-info").textContent = port.frame_shape.slice(0, 2).join("x") + (port.frame_index === null ? "" : "  frame #" + port.frame_index);
  drawHistogram(s.histogram);
}

async function post(url, body) {
  const r = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  if (!r.ok) alert(await r.text());
  return refresh();
}

async function refresh() {
  try {
    const r = await fetch("/api/state", { cache: "no-store" });
    render(await r.json());
  } catch (e) {
    $("conn").textContent = "disconnected"; $("conn").className = "badge bad";
  }
}

function refreshFrame() {
  if (!last || !Object.keys(last.ports).length) return setTimeout(refreshFrame, FRAME_MS);
  const img = $("frame");
  img.onload = () => {
    img.dataset.loaded = String(Number(img.dataset.loaded) + 1);
    setTimeout(refreshFrame, FRAME_MS);
  };
  img.onerror = () => setTimeout(refreshFrame, FRAME_MS);
  img.src = "/api/frame.jpg?t=" + Date.now();
}

document.querySelectorAll("#mode-buttons button").forEach((b) => b.addEventListener("click", () => post("/api/mode", { mode: b.dataset.mode })));
$("record").addEventListener("click", () => post("/api/record", { on: !(last && last.recording.on) }));
$("reset").addEventListener("click", () => post("/api/reset", {}));
setInterval(refresh, STATE_MS);
refresh();
refreshFrame();
