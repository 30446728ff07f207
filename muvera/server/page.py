"""The search page served at ``/``: plain HTML and a few lines of JavaScript, no framework."""

from __future__ import annotations

__all__ = ["PAGE"]

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>muvera search</title>
<style>
  body { font: 15px/1.45 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto;
         padding: 0 1rem; color: #1d2430; }
  h1 { font-size: 1.3rem; margin: 0 0 .2rem; }
  #stats { color: #5b6472; font-size: .85rem; margin-bottom: 1rem; }
  form { display: grid; grid-template-columns: 1fr auto auto; gap: .5rem; }
  input, textarea, button { font: inherit; padding: .45rem .6rem; border: 1px solid #c5ccd6;
                            border-radius: 6px; }
  button { background: #2456c9; color: #fff; border: 0; cursor: pointer; }
  details { grid-column: 1 / -1; font-size: .9rem; }
  textarea { width: 100%; box-sizing: border-box; }
  #timing { color: #5b6472; font-size: .85rem; margin: .8rem 0; }
  table { border-collapse: collapse; width: 100%; }
  td, th { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid #e4e8ee;
           vertical-align: top; }
  td.num { font-variant-numeric: tabular-nums; text-align: right; white-space: nowrap; }
  .error { color: #b3261e; }
</style>
</head>
<body>
<h1>muvera search</h1>
<div id="stats">loading&hellip;</div>
<form id="form">
  <input id="q" placeholder="Ask something" autofocus required>
  <input id="k" type="number" min="1" value="10" title="results" style="width:5rem">
  <button>Search</button>
  <details><summary>filter, candidates, API key</summary>
    <p><textarea id="filter" rows="3"
      placeholder='{"must": [{"key": "lang", "match": {"value": "en"}}]}'></textarea></p>
    <p>candidates <input id="candidates" type="number" min="1" placeholder="default"
       style="width:6rem">
       API key <input id="key" type="password"></p>
  </details>
</form>
<div id="timing"></div>
<table id="results"></table>
<script>
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;",
  ">": "&gt;", '"': "&quot;"}[c]));
function headers() {
  const h = {"content-type": "application/json"};
  if ($("key").value) h["x-api-key"] = $("key").value;
  return h;
}
fetch("health").then((r) => r.json()).then((s) => {
  $("stats").textContent = s.documents.toLocaleString() + " documents, generation " +
    s.generation;
});
async function run(event) {
  if (event) event.preventDefault();
  const body = {queries: [$("q").value], k: Number($("k").value), with_payloads: true};
  if ($("candidates").value) body.candidates = Number($("candidates").value);
  if ($("filter").value.trim()) {
    try { body.filter = JSON.parse($("filter").value); }
    catch (e) { $("timing").innerHTML = '<span class="error">filter: ' + esc(e) + "</span>";
                return; }
  }
  const response = await fetch("search", {method: "POST", headers: headers(),
                                          body: JSON.stringify(body)});
  const data = await response.json();
  if (!response.ok) {
    $("timing").innerHTML = '<span class="error">' + esc(data.error) + "</span>";
    $("results").innerHTML = "";
    return;
  }
  const t = data.timing_ms;
  const names = {fde: "query FDE", candidates: "FDE candidates", rerank: "MaxSim re-rank",
                 exact: "exact MaxSim", qdrant: "Qdrant (both stages)"};
  const stages = Object.entries(t.stages).map(([k, v]) => (names[k] || k) + " " +
    v.toFixed(1) + " ms");
  $("timing").textContent = ["query encoding " + t.encode.toFixed(1) + " ms", ...stages,
    "total " + t.total.toFixed(1) + " ms"].join(", ");
  const rows = data.results[0].map((hit, i) => {
    const p = hit.payload || {};
    const text = [p.title, p.text].filter(Boolean).join(" \u2014 ") || JSON.stringify(p);
    return "<tr><td class=num>" + (i + 1) + "</td><td class=num>" + hit.score.toFixed(3) +
      "</td><td>" + esc(hit.id) + "</td><td>" + esc(text.slice(0, 300)) + "</td></tr>";
  });
  $("results").innerHTML = "<tr><th>#</th><th>score</th><th>id</th><th>document</th></tr>" +
    rows.join("");
}
$("form").addEventListener("submit", run);
const asked = new URLSearchParams(location.search).get("q");  // a link to a search: ?q=...
if (asked) { $("q").value = asked; run(); }
</script>
</body>
</html>
"""
