"""The live status page: one self-contained HTML document (no external script, style or font).

The statechart is the machine's own SVG (:func:`statechart_svg`), inlined; the page's script
polls ``/status.json`` and marks each shard's current state on it. State nodes are found by
the ``<title>`` Graphviz gives every node group (the state's name), not by ids or layout, so a
restyled chart keeps working. Every value from the status document is written with
``textContent``: a close reason chosen by the peer can never become markup.
"""

from __future__ import annotations

import functools
import html
import re
from pathlib import Path

__all__ = ["page_html", "statechart_svg"]

_PROLOG = re.compile(r"\A.*?(?=<svg\b)", re.S)
_SVG_TAG = re.compile(r"<svg\b[^>]*>", re.S)
_SIZE_ATTR = re.compile(r'\s(?:width|height)="[^"]*"')


def _inline(svg: str) -> str:
    """An SVG document → an element to inline: no XML prolog or doctype, no fixed size."""
    svg = _PROLOG.sub("", svg, count=1)
    match = _SVG_TAG.search(svg)
    if match is None:
        raise ValueError("not an SVG document")
    tag = _SIZE_ATTR.sub("", match.group(0))
    return svg[: match.start()] + tag + svg[match.end() :]


@functools.cache
def statechart_svg() -> tuple[str, str]:
    """``(svg, source)``: the statechart to inline, and where it came from.

    In order: rendered from the table by :func:`qqconn.statecharts.render` (needs Graphviz), the
    committed ``statecharts/connection.svg`` of a source checkout, or a plain drawing of the
    states and their edges made here from the same table (no Graphviz needed).
    """
    try:
        from qqconn.statecharts import render

        return _inline(render("svg")), "rendered from the machine's table by Graphviz"
    except Exception:  # no Graphviz here, or a renderer that changed: try the next source
        pass
    committed = Path(__file__).resolve().parents[2] / "statecharts" / "connection.svg"
    try:
        return _inline(committed.read_text(encoding="utf-8")), f"{committed.name} (committed)"
    except (OSError, ValueError):
        pass
    return _plain_chart(), "drawn without Graphviz (install it for the full statechart)"


def _plain_chart() -> str:
    """The states as boxes and the table's edges as lines, laid out by hand."""
    from qqconn.machine import State, build_rows
    from qqconn.statecharts import diagram_rows

    where = {
        "CONNECTING": (20, 40),
        "IDENTIFIED": (220, 40),
        "ALIVE": (420, 40),
        "QUICK_DROPPED": (220, 170),
        "BACKOFF": (20, 170),
        "FATAL": (420, 170),
        "STOPPED": (620, 105),
    }
    w, h = 150, 40
    for i, state in enumerate(s for s in State if s.name not in where):
        where[state.name] = (20 + 200 * i, 280)
    parts = [
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 800 340">',
        "<defs><marker id='qq-arrow' viewBox='0 0 10 10' refX='10' refY='5' markerWidth='8' "
        "markerHeight='8' orient='auto'><path d='M0,0L10,5L0,10z' fill='#555'/></marker></defs>",
        '<g id="graph0" class="graph">',
    ]
    edges = set()
    for row in diagram_rows(build_rows()):
        sources = row["source"] if isinstance(row["source"], list) else [row["source"]]
        for src in sources:
            if row["dest"] is not None and row["dest"] != src:
                edges.add((src.name, row["dest"].name))
    for src, dst in sorted(edges):
        (x1, y1), (x2, y2) = where[src], where[dst]
        parts.append(
            f'<g class="edge"><title>{src}&#45;&gt;{dst}</title><line x1="{x1 + w / 2}" '
            f'y1="{y1 + h / 2}" x2="{x2 + w / 2}" y2="{y2 + h / 2}" stroke="#999" '
            "marker-end='url(#qq-arrow)'/></g>"
        )
    for name, (x, y) in where.items():
        parts.append(
            f'<g class="node"><title>{name}</title><rect x="{x}" y="{y}" width="{w}" '
            f'height="{h}" rx="8" fill="white" stroke="black"/><text x="{x + w / 2}" '
            f'y="{y + 25}" text-anchor="middle" font-family="sans-serif" font-size="14">'
            f"{name}</text></g>"
        )
    parts.append("</g></svg>")
    return "".join(parts)


def page_html(*, title: str, refresh_s: float) -> str:
    """The whole page; it reads ``/status.json`` every ``refresh_s`` seconds."""
    svg, source = statechart_svg()
    return (
        _PAGE.replace("@@TITLE@@", html.escape(title))
        .replace("@@REFRESH_MS@@", str(max(100, round(refresh_s * 1000))))
        .replace("@@CHART_SOURCE@@", html.escape(source))
        .replace("@@SVG@@", svg)
    )


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>@@TITLE@@</title>
<style>
  :root { --ok: #1b7f3b; --ok-bg: #d9f2e1; --warn: #b35c00; --warn-bg: #ffe7c7;
          --bad: #b3261e; --bad-bg: #fbdad7; --off: #555; --off-bg: #e4e4e4;
          --ink: #1d232a; --muted: #5d6670; --line: #d8dde3; --card: #fff; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
         color: var(--ink); background: #f3f5f7; }
  header { display: flex; align-items: center; gap: 16px; padding: 14px 24px;
           background: var(--card); border-bottom: 1px solid var(--line); }
  header h1 { font-size: 18px; margin: 0; font-weight: 600; }
  #verdict { padding: 6px 14px; border-radius: 999px; font-weight: 700; letter-spacing: .02em; }
  #verdict.ok { background: var(--ok-bg); color: var(--ok); }
  #verdict.bad { background: var(--bad-bg); color: var(--bad); }
  #verdict-text { color: var(--muted); }
  #updated { margin-left: auto; color: var(--muted); font-size: 12px; }
  #updated.lost { color: var(--bad); font-weight: 600; }
  main { padding: 16px 24px 32px; display: grid; gap: 16px; }
  section { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
            padding: 14px 16px; }
  section h2 { font-size: 13px; text-transform: uppercase; letter-spacing: .06em;
               color: var(--muted); margin: 0 0 10px; }
  #chart svg { width: 100%; height: auto; max-height: 62vh; display: block; }
  #chart .qq-current { filter: drop-shadow(0 0 calc(5px * var(--k, 1)) var(--glow)); }
  #chart .qq-current > path, #chart .qq-current > polygon, #chart .qq-current > ellipse,
  #chart .qq-current > rect { stroke-width: calc(3px * var(--k, 1)) !important;
    fill: var(--fill) !important; stroke: var(--glow) !important; }
  #chart .qq-ok { --fill: var(--ok-bg); --glow: var(--ok); }
  #chart .qq-warn { --fill: var(--warn-bg); --glow: var(--warn); }
  #chart .qq-bad { --fill: var(--bad-bg); --glow: var(--bad); }
  #chart .qq-off { --fill: var(--off-bg); --glow: var(--off); }
  #chart .qq-current > text { font-weight: 700; }
  #chart .qq-tag text { font-family: system-ui, sans-serif; font-weight: 700; fill: #fff; }
  #chart .qq-tag rect { stroke: none; }
  .legend { display: flex; gap: 16px; flex-wrap: wrap; color: var(--muted); font-size: 12px;
            margin-top: 8px; }
  .legend span::before { content: ""; display: inline-block; width: 10px; height: 10px;
            border-radius: 3px; margin-right: 6px; vertical-align: -1px;
            background: var(--swatch); }
  #chart-note { color: var(--muted); font-size: 12px; margin-top: 6px; }
  .cards { display: grid; gap: 12px; grid-template-columns: repeat(auto-fill, minmax(330px, 1fr)); }
  .conn { border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; }
  .conn h3 { margin: 0 0 8px; font-size: 15px; display: flex; gap: 8px; align-items: center; }
  .pill { padding: 2px 10px; border-radius: 999px; font-size: 12px; font-weight: 700;
          text-transform: uppercase; }
  .pill.ok { background: var(--ok-bg); color: var(--ok); }
  .pill.warn { background: var(--warn-bg); color: var(--warn); }
  .pill.bad { background: var(--bad-bg); color: var(--bad); }
  .pill.off { background: var(--off-bg); color: var(--off); }
  dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 0; }
  dt { color: var(--muted); }
  dd { margin: 0; font-variant-numeric: tabular-nums; }
  table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
  th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line);
           vertical-align: top; }
  th { color: var(--muted); font-weight: 600; font-size: 12px; }
  td.arrow { white-space: nowrap; }
  .empty { color: var(--muted); }
</style>
</head>
<body data-verdict="unknown">
<header>
  <h1>@@TITLE@@</h1>
  <span id="verdict" class="bad">…</span>
  <span id="verdict-text">waiting for the first status</span>
  <span id="updated"></span>
</header>
<main>
  <section>
    <h2>Connection machine</h2>
    <div id="chart">@@SVG@@</div>
    <div class="legend">
      <span style="--swatch: var(--ok)">alive</span>
      <span style="--swatch: var(--warn)">on its way (connecting, identified, backoff, quick dropped)</span>
      <span style="--swatch: var(--bad)">fatal: gave up</span>
      <span style="--swatch: var(--off)">stopped</span>
    </div>
    <div id="chart-note" class="legend">The highlighted box is the state each shard is in now.
      Statechart: @@CHART_SOURCE@@.</div>
  </section>
  <section>
    <h2>Connections</h2>
    <div id="connections" class="cards"><span class="empty">none yet</span></div>
  </section>
  <section>
    <h2>Recent transitions (newest first)</h2>
    <table>
      <thead><tr><th>time</th><th>shard</th><th>transition</th><th>trigger</th><th>reason</th>
        <th>quick / failed</th></tr></thead>
      <tbody id="transitions"><tr><td colspan="6" class="empty">none yet</td></tr></tbody>
    </table>
  </section>
</main>
<script>
"use strict";
const REFRESH_MS = @@REFRESH_MS@@;
const TONE = { alive: "ok", fatal: "bad", stopped: "off" };
const tone = (state) => TONE[state] || "warn";
const chart = document.querySelector("#chart svg");
const nodes = new Map();
if (chart) {
  for (const g of chart.querySelectorAll("g")) {
    const t = g.querySelector(":scope > title");
    if (t && /^[A-Z_]+$/.test(t.textContent.trim())) nodes.set(t.textContent.trim(), g);
  }
}
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
function fmt(v, unit) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "number" && unit === "dur") {
    if (v < 60) return v.toFixed(1) + " s";
    if (v < 3600) return Math.floor(v / 60) + " min " + String(Math.floor(v % 60)).padStart(2, "0") + " s";
    return Math.floor(v / 3600) + " h " + String(Math.floor((v % 3600) / 60)).padStart(2, "0") + " min";
  }
  if (typeof v === "number" && unit === "s") return v < 1 ? (v * 1000).toFixed(1) + " ms" : v.toFixed(2) + " s";
  return String(v);
}
function clock(unix) {
  const d = new Date(unix * 1000);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}
const SVG_NS = "http://www.w3.org/2000/svg";
function scale() {
  // user units per screen pixel: keeps strokes and tags readable however wide the chart is
  const width = chart.getBoundingClientRect().width;
  const box = chart.viewBox && chart.viewBox.baseVal;
  const k = box && box.width && width ? box.width / width : 1;
  chart.style.setProperty("--k", k);
  return k;
}
function highlight(conns) {
  if (!chart) return;
  for (const tag of chart.querySelectorAll("g.qq-tag")) tag.remove();
  for (const g of nodes.values()) g.classList.remove("qq-current", "qq-ok", "qq-warn", "qq-bad", "qq-off");
  const byState = new Map();
  for (const c of conns) {
    const name = c.state.toUpperCase();
    if (!byState.has(name)) byState.set(name, []);
    byState.get(name).push(c.shard);
  }
  const k = scale();
  const missing = [];
  for (const [name, shards] of byState) {
    const g = nodes.get(name);
    if (!g) { missing.push(name); continue; }
    const cls = "qq-" + tone(name.toLowerCase());
    g.classList.add("qq-current", cls);
    const box = g.getBBox();
    const tag = document.createElementNS(SVG_NS, "g");
    tag.setAttribute("class", "qq-tag " + cls);
    const text = document.createElementNS(SVG_NS, "text");
    text.setAttribute("font-size", 13 * k);
    text.setAttribute("text-anchor", "middle");
    text.setAttribute("x", box.x + box.width / 2);
    text.setAttribute("y", box.y - 9 * k);
    text.textContent = (shards.length > 1 ? "shards " : "shard ") + shards.join(", ");
    const pill = document.createElementNS(SVG_NS, "rect");
    tag.append(pill, text);
    g.parentNode.appendChild(tag);
    const t = text.getBBox();
    pill.setAttribute("x", t.x - 7 * k);
    pill.setAttribute("y", t.y - 2 * k);
    pill.setAttribute("width", t.width + 14 * k);
    pill.setAttribute("height", t.height + 4 * k);
    pill.setAttribute("rx", 6 * k);
    pill.style.fill = "var(--glow)";
  }
  document.getElementById("chart-note").dataset.missing = missing.join(",");
}
function card(c) {
  const box = el("div", null, "conn");
  const h = el("h3");
  h.append(el("span", "shard " + c.shard), el("span", c.state, "pill " + tone(c.state)));
  h.append(el("span", "app " + c.app_id, "empty"));
  box.append(h);
  const dl = el("dl");
  const k = c.counters || {};
  const endings = Object.entries(c.endings || {}).map(([kind, n]) => kind + " " + n).join(", ");
  const rows = [
    ["in this state for", fmt(c.in_state_s, "dur")],
    ["session", c.session || "—"],
    ["attempt", fmt(k.attempt)],
    ["failed attempts in a row", fmt(k.reconnect_attempts)],
    ["quick drops in a row", fmt(k.quick_disconnects)],
    ["heartbeat", k.heartbeat_interval_s ? "every " + fmt(k.heartbeat_interval_s, "s") + ", last ACK " + fmt(k.last_ack_latency_s, "s") : "—"],
    ["last frame", c.last_frame_age_s === null ? "—" : fmt(c.last_frame_age_s, "s") + " ago"],
    ["last seq", fmt(k.last_seq)],
    ["dispatches", fmt(c.dispatches_delivered) + " delivered, " + fmt(c.dispatches_replayed) + " replayed"],
    ["connections opened", fmt(c.connections_opened)],
    ["endings", endings || "none"],
  ];
  if (c.fatal) rows.push(["FATAL", c.fatal.reason + (c.fatal.retryable ? " (retryable)" : " (not retryable)")]);
  for (const [name, value] of rows) dl.append(el("dt", name), el("dd", value));
  box.append(dl);
  if (!c.transitions_reported) box.append(el("p", "Transitions are not reported: give this manager on_state_change=ops.on_state_change.", "empty"));
  return box;
}
function render(doc) {
  const v = document.getElementById("verdict");
  v.textContent = doc.healthy ? "READY" : "NOT READY";
  v.className = doc.healthy ? "ok" : "bad";
  document.getElementById("verdict-text").textContent = doc.verdict;
  document.body.dataset.verdict = doc.healthy ? "ready" : "not-ready";
  highlight(doc.connections);
  const cards = document.getElementById("connections");
  cards.replaceChildren(...(doc.connections.length ? doc.connections.map(card) : [el("span", "none", "empty")]));
  const body = document.getElementById("transitions");
  const rows = doc.transitions.slice(0, 25).map((t) => {
    const tr = el("tr");
    tr.append(el("td", clock(t.at_unix)), el("td", t.shard));
    const arrow = el("td", null, "arrow");
    arrow.append(el("span", t.previous.toUpperCase()), document.createTextNode(" → "),
                 el("span", t.state.toUpperCase(), "pill " + tone(t.state)));
    tr.append(arrow, el("td", t.trigger), el("td", t.reason || ""));
    tr.append(el("td", fmt(t.quick_drops) + " / " + fmt(t.failed_attempts)));
    return tr;
  });
  if (!rows.length) { const tr = el("tr"); const td = el("td", "none yet", "empty"); td.colSpan = 6; tr.append(td); rows.push(tr); }
  body.replaceChildren(...rows);
}
let lastOk = null;
async function tick() {
  const u = document.getElementById("updated");
  try {
    const r = await fetch("status.json", { cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
    lastOk = new Date();
    u.textContent = "updated " + lastOk.toLocaleTimeString([], { hour12: false });
    u.className = "";
  } catch (e) {
    u.textContent = "no answer from the process" + (lastOk ? " since " + lastOk.toLocaleTimeString([], { hour12: false }) : "") + " (" + e.message + ")";
    u.className = "lost";
    document.body.dataset.verdict = "unknown";
  } finally {
    setTimeout(tick, REFRESH_MS);
  }
}
tick();
</script>
</body>
</html>
"""
