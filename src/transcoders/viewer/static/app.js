// transcoders viewer: a small single-page app over the JSON API of `transcoders serve`. No framework, no CDN.
"use strict";

const app = document.getElementById("app");
const tip = document.getElementById("tip");

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "style") { if (v) el.style.cssText = v; }  // CSSOM: allowed under a strict CSP (style attributes are not)
    else if (v !== null && v !== undefined && v !== false) el.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids.flat()) if (kid !== null && kid !== undefined) el.append(kid instanceof Node ? kid : String(kid));
  return el;
}
function svg(tag, attrs, ...kids) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v); else el.setAttribute(k, v);
  }
  for (const kid of kids.flat()) if (kid) el.append(kid);
  return el;
}
async function api(path, body) {
  const opts = body === undefined ? {} : { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const r = await fetch(path, opts);
  const data = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
  if (!r.ok) throw new Error(data.error || `HTTP ${r.status}`);
  return data;
}
const q = (o) => new URLSearchParams(o).toString();
const fmt = (x, d = 3) => (x === null || x === undefined ? "–" : typeof x === "number" ? (Math.abs(x) >= 1000 ? x.toExponential(2) : x.toFixed(d)) : x);
const pct = (x) => (x === 0 ? "0% (never fired)" : (x < 0.001 ? (100 * x).toExponential(1) : (100 * x).toFixed(3)) + "%");
const showTip = (ev, text) => { tip.hidden = false; tip.textContent = text; tip.style.left = ev.clientX + 14 + "px"; tip.style.top = ev.clientY + 10 + "px"; };
const hideTip = () => { tip.hidden = true; };

// null/undefined parts are skipped (replaceChildren would print them as the text "null")
function render(...nodes) { app.replaceChildren(...nodes.flat().filter((n) => n !== null && n !== undefined)); }
function fail(err) {  // the message, and a way back
  render(h("p", { class: "error", id: "error" }, err.message || String(err)),
    h("p", {}, h("a", { href: "#", id: "back", onclick: (e) => { e.preventDefault(); history.back(); } }, "← back"), "  ·  ", h("a", { href: "#/" }, "all runs")));
}

// ---------------------------------------------------------------------------------------------- routes
const routes = [
  [/^#?\/?$/, home],
  [/^#\/run\/(.+)$/, (m) => runPage(decodeURIComponent(m[1]))],
  [/^#\/feature\/(.+)\/(\d+)$/, (m) => featurePage(decodeURIComponent(m[1]), +m[2])],
  [/^#\/search\/(.+)\/(.+)$/, (m) => searchPage(decodeURIComponent(m[1]), decodeURIComponent(m[2]))],
  [/^#\/concepts\/(.+)$/, (m) => conceptsPage(decodeURIComponent(m[1]))],
  [/^#\/graphs$/, graphsPage],
  [/^#\/graph\/([^?]+)(?:\?(.*))?$/, (m) => graphPage(decodeURIComponent(m[1]), m[2] || "")],
  [/^#\/rate$/, rateStart],
  [/^#\/rate\/([0-9a-f]+)$/, (m) => ratePage(m[1])],
];
async function route() {
  hideTip();
  const hash = location.hash || "#/";
  for (const [re, fn] of routes) {
    const m = hash.match(re);
    if (m) { try { await fn(m); } catch (e) { fail(e); } return; }
  }
  fail(new Error("no such page"));
}
window.addEventListener("hashchange", route);
route();

// ---------------------------------------------------------------------------------------------- runs
async function home() {
  const d = await api("/api/runs");
  const rows = d.runs.map((r) => h("tr", {},
    h("td", {}, h("a", { href: `#/run/${encodeURIComponent(r.path)}` }, r.path)),
    h("td", { class: "num" }, r.layer), h("td", {}, `${r.kind}/${r.activation}`), h("td", { class: "num" }, r.width),
    h("td", { class: "num" }, r.k ?? "–"), h("td", { class: "num" }, fmt(r.l0, 1)), h("td", { class: "num" }, fmt(r.fvu)),
    h("td", {}, r.store ? `${r.store.tokens_done.toLocaleString()} tokens${r.store.complete ? "" : " (partial)"}` : h("span", { class: "muted" }, "none"))));
  const sweeps = d.sweeps.map((s) => h("div", { class: "card" }, h("h2", {}, `sweep ${s.path}`),
    table(Object.keys(s.rows[0] || {}), s.rows.map((r) => Object.values(r))),
    h("div", { class: "row" }, s.plots.map((p) => h("img", { src: `/api/file?${q({ path: `${s.path}/${p}` })}`, width: 520, alt: p })))));
  render(h("h1", {}, "Runs"), h("p", { class: "muted" }, d.root),
    d.runs.length ? h("table", {}, h("tr", {}, ["run", "layer", "kind", "width", "k", "L0", "FVU", "feature store"].map((t) => h("th", {}, t))), rows)
      : h("p", {}, "No runs here yet: train one with `transcoders train`."),
    sweeps.length ? h("h1", {}, "Sweeps") : null, sweeps,
    d.graphs.length ? h("h1", {}, "Circuit graphs") : null, graphList(d.graphs));
}
function table(head, rows) {
  return h("table", {}, h("tr", {}, head.map((t) => h("th", {}, t))), rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c)))));
}

async function runPage(run) {
  const r = await api(`/api/run?${q({ run })}`);
  const parts = [h("h1", {}, `Run ${run}`), h("div", { class: "stats card" },
    h("span", {}, `layer ${r.layer}`), h("span", {}, `${r.kind}/${r.activation}`), h("span", {}, `width ${r.width}`),
    h("span", {}, `k ${r.k ?? "–"}`), h("span", {}, `L0 ${fmt(r.l0, 1)}`), h("span", {}, `FVU ${fmt(r.fvu)}`), h("span", {}, r.model))];
  if (!r.store) {
    parts.push(h("p", {}, "No feature store yet: run ", h("code", {}, `transcoders features ${run}`), " to collect examples."));
  } else {
    parts.push(featureNav(run, null, r.width),
      h("h2", {}, `Feature density (${r.dead} never fired in ${r.store.tokens_done.toLocaleString()} tokens)`),
      barChart(r.density_hist, "log10 density"),
      h("h2", {}, "Densest features"),
      h("ul", {}, r.densest.map((f) => h("li", {}, h("a", { href: `#/feature/${encodeURIComponent(run)}/${f.id}` }, `#${f.id}`), ` ${pct(f.density)}`))),
      h("p", {}, h("a", { href: `#/concepts/${encodeURIComponent(run)}`, id: "concepts-link" }, "Find the features of a concept →")));
  }
  if (r.interp) parts.push(h("h2", {}, "Interpretability scores"), interpCard(r.interp));
  if (r.explained && r.explained.length) {
    parts.push(h("h2", {}, "Explained features (best detection first)"), table(["feature", "explanation", "detection", "fuzzing", "LLM"],
      r.explained.map((e) => [h("a", { href: `#/feature/${encodeURIComponent(run)}/${e.id}` }, `#${e.id}`), e.explanation, fmt(e.detection, 2), fmt(e.fuzzing, 2), e.llm])));
  }
  parts.push(h("h2", {}, "Config"), h("pre", { class: "card" }, JSON.stringify({ config: r.config, metrics: r.metrics }, null, 1)));
  render(...parts);
}

const ci = (v) => (v && v[0] === v[0] ? `${v[0].toFixed(3)} [${v[1].toFixed(3)}, ${v[2].toFixed(3)}]` : "–");

function interpCard(it) {
  const rows = [];
  for (const [name, s] of Object.entries(it.llm || {})) rows.push([`LLM ${name}`, `${s.features} features: detection ${ci(s.detection)}, fuzzing ${ci(s.fuzzing)}`]);
  for (const [task, p] of Object.entries(it.probing || {})) {
    rows.push([`probing: ${task}`, `${p.classes.length} labels, ${p.texts} texts: ` + Object.entries(p.mean).map(([k, v]) => `${k} ${v.toFixed(3)}`).join(", ")]);
  }
  if (it.absorption) rows.push(["first-letter absorption", Object.entries(it.absorption).map(([k, v]) => `${k} ${v.toFixed(3)}`).join(", ")]);
  const w = it.weights || {};
  if (w.features) rows.push(["weights", `${w.features} features: hit@10 ${ci(w["hit@10"])}, de-embedding percentile ${ci(w.percentile)}, single-token ${ci(w.single_token)}`]);
  return h("div", { class: "card", id: "interp-scores" }, table(["score", "value (95% interval)"], rows));
}

function featureNav(run, id, width) {
  const go = (i) => { location.hash = `#/feature/${encodeURIComponent(run)}/${((i % width) + width) % width}`; };
  const box = h("input", { type: "text", placeholder: "feature #", size: 8, id: "goto" });
  const said = h("span", { class: "error", id: "goto-error" });
  const open = () => {  // a whole number in range, or a message saying what to type (no silent wrap, no NaN page)
    const t = box.value.trim();
    if (!/^\d+$/.test(t) || +t >= width) { said.textContent = ` no feature "${t}": give a number from 0 to ${width - 1}`; return; }
    said.textContent = "";
    go(+t);
  };
  const random = async () => {  // a live feature (one that fired in the store), else any
    try { go((await api(`/api/random?${q({ run })}`)).id); } catch (e) { go(Math.floor(Math.random() * width)); }
  };
  const sbox = h("input", { type: "text", placeholder: "search: token or label", size: 22, id: "search" });
  return h("div", { class: "nav row" },
    h("div", {},
      id !== null ? h("button", { onclick: () => go(id - 1), id: "prev" }, "← previous") : null,
      id !== null ? h("button", { onclick: () => go(id + 1), id: "next" }, "next →") : null,
      h("button", { onclick: random, id: "random" }, "random")),
    h("form", { onsubmit: (e) => { e.preventDefault(); open(); } }, box, " ", h("button", {}, "open"), said),
    h("form", { onsubmit: (e) => { e.preventDefault(); if (sbox.value.trim()) location.hash = `#/search/${encodeURIComponent(run)}/${encodeURIComponent(sbox.value.trim())}`; } },
      sbox, " ", h("button", {}, "search")));
}

// ---------------------------------------------------------------------------------------------- features
function barChart(hist, xlabel) {
  const W = 420, H = 110, n = hist.counts.length || 1, max = Math.max(1, ...hist.counts), bw = W / n;
  const bars = hist.counts.map((c, i) => svg("rect", {
    x: i * bw, y: H - (H * c) / max, width: Math.max(1, bw - 1), height: (H * c) / max, fill: "#748ffc",
    onmousemove: (ev) => showTip(ev, `${xlabel} ${(hist.lo + i * hist.step).toFixed(2)} to ${(hist.lo + (i + 1) * hist.step).toFixed(2)}: ${c}`),
    onmouseleave: hideTip }));
  const Y = 44;  // room for the y-axis labels (counts)
  return svg("svg", { width: W + Y, height: H + 16, class: "chart" },
    svg("g", { transform: `translate(${Y}, 0)` }, bars,
      svg("line", { x1: 0, y1: 0, x2: 0, y2: H, stroke: "#868e96" }),
      svg("text", { x: 0, y: H + 13 }, document.createTextNode(`${xlabel} ${hist.lo.toFixed(1)}`)),
      svg("text", { x: W - 60, y: H + 13 }, document.createTextNode((hist.lo + n * hist.step).toFixed(1)))),
    svg("text", { x: Y - 4, y: 10, "text-anchor": "end", class: "y-max" }, document.createTextNode(max.toLocaleString())),
    svg("text", { x: Y - 4, y: H, "text-anchor": "end" }, document.createTextNode("0")),
    svg("text", { x: Y - 4, y: 26, "text-anchor": "end", class: "muted" }, document.createTextNode("count")));
}

function example(ex, max, showValue = true) {
  const toks = ex.tokens.map((t, i) => {
    const a = ex.acts[i], alpha = max > 0 ? Math.min(1, a / max) : 0;
    return h("span", {
      class: "tok" + (i === ex.at ? " at" : ""), style: a > 0 ? `background: rgba(232, 89, 12, ${(0.08 + 0.8 * alpha).toFixed(2)})` : null,
      title: showValue ? `${JSON.stringify(t)}  ${a.toFixed(3)}` : JSON.stringify(t) }, t.replace(/\n/g, "⏎"));
  });
  return h("div", { class: "ex" }, showValue && ex.act !== undefined ? h("span", { class: "val" }, ex.act.toFixed(3)) : null,
    ex.source ? h("span", { class: "src" }, ex.source) : null, toks);
}

function logitTable(title, rows, cls) {
  return h("div", { class: "card logits" }, h("b", {}, title), h("table", {}, rows.map((r) =>
    h("tr", {}, h("td", {}, JSON.stringify(r.token)), h("td", { class: "num " + cls }, (r.value >= 0 ? "+" : "") + r.value.toFixed(3))))));
}

async function featurePage(run, id) {
  const f = await api(`/api/feature?${q({ run, id })}`);
  const label = h("input", { type: "text", value: f.label, placeholder: "name this feature", size: 40, id: "label" });
  const note = h("textarea", { rows: 2, cols: 60, placeholder: "notes", id: "note" }, f.note);
  const saved = h("span", { class: "muted", id: "saved" });
  const save = async (e) => {
    e.preventDefault();
    try { await api("/api/label", { run, id, label: label.value, note: note.value }); saved.textContent = "saved"; }
    catch (err) { saved.textContent = err.message; }
  };
  const max = f.max_act || 1;
  render(
    h("h1", {}, `${run} — feature #${id}`, f.label ? h("span", { class: "muted" }, `  “${f.label}”`)
      : f.auto_label ? h("span", { class: "muted", id: "auto-label", title: "an LLM's explanation (no one has labelled this feature)" }, `  “${f.auto_label}” (auto)`) : null),
    featureNav(run, id, f.width),
    h("form", { class: "card", onsubmit: save, id: "label-form" }, label, " ", h("button", { class: "primary" }, "save label"), " ", saved, h("br"), note),
    f.explanations.length ? h("div", { class: "card", id: "explanations" }, h("b", {}, "LLM explanations"), table(["explanation", "detection", "fuzzing", "LLM"],
      f.explanations.map((e) => [e.explanation, fmt(e.detection, 2), fmt(e.fuzzing, 2), e.llm]))) : null,
    h("div", { class: "feature-grid" },
      h("div", {},
        h("h2", {}, "Top activations"),
        h("div", { class: "card", id: "top-examples" }, f.top.length ? f.top.map((ex) => example(ex, max)) : h("p", { class: "muted" }, "never fired")),
        tryText(run, id, max),
        h("h2", {}, "Across its activation range (uniform sample, by quantile)"),
        h("div", { class: "card" }, f.quantiles.map((g) => h("div", { class: "group" },
          h("h3", {}, `activation ${fmt(g.range[0])} – ${fmt(g.range[1])}`), g.examples.map((ex) => example(ex, max)))))),
      h("div", {},
        h("div", { class: "stats card" }, h("div", {}, `density ${pct(f.density)} (${f.fires.toLocaleString()} of ${f.tokens.toLocaleString()} tokens)`),
          h("div", {}, `mean activation ${fmt(f.mean_act)}, max ${fmt(f.max_act)}`)),
        h("h2", {}, "Activation histogram"), barChart(f.hist, "log10 activation"),
        h("h2", {}, "Logit effects"), h("p", { class: "muted", id: "logit-units" }, "change in each token's logit (nats) per unit of this feature's activation, through the unembedding only (direct effect)"),
        h("div", { class: "row" }, logitTable("promotes", f.top_logits, "pos"), logitTable("suppresses", f.bottom_logits, "neg")),
        f.frequent_tokens && f.frequent_tokens.length ? [h("h2", {}, "Most frequent tokens (where it fires, in its stored examples)"),
          h("div", { class: "card", id: "frequent" }, f.frequent_tokens.map((t) => h("span", { class: "chip" }, `${JSON.stringify(t.token)} ×${t.count}`)))] : null,
        f.graphs && f.graphs.length ? [h("h2", {}, "In circuit graphs"), h("ul", { id: "in-graphs" }, f.graphs.map((g) => h("li", {}, h("a", { href: `#/graph/${encodeURIComponent(g.path)}` }, g.name))))] : null,
        similarCard(run, f.similar),
        h("h2", {}, "De-embedding"), h("p", { class: "muted" }, "this feature's pre-activation per token embedding read directly (no attention, no earlier MLPs)"),
        h("div", { class: "row" }, logitTable("excited by", f.top_deembed, "pos"), logitTable("inhibited by", f.bottom_deembed, "neg")))));
}

function tryText(run, id, max) {  // run your own text through the model and see where this feature fires
  const box = h("textarea", { rows: 3, cols: 60, id: "try-text", placeholder: "type a text to see this feature's activation on each token" });
  const out = h("div", { id: "try-out" });
  const go = async (e) => {
    e.preventDefault();
    out.replaceChildren(h("p", { class: "muted" }, "reading it with the model…"));
    try {
      const r = await api("/api/activate", { run, id, text: box.value });
      out.replaceChildren(h("p", { class: "muted" }, `max ${r.max.toFixed(3)} (the strongest top example: ${max.toFixed(3)})`),
        example({ tokens: r.tokens, acts: r.acts, at: r.at, act: r.max }, Math.max(max, r.max)));
    } catch (err) { out.replaceChildren(h("p", { class: "error" }, err.message)); }
  };
  return [h("h2", {}, "Try your own text"), h("form", { class: "card", onsubmit: go, id: "try-form" }, box, h("br"), h("button", { class: "primary" }, "run"), out)];
}

function similarCard(run, sim) {  // nearest features by direction: what else writes (or reads) much the same
  if (!sim || !sim.decoder.length) return null;
  const list = (rows) => h("ol", {}, rows.map((r) => h("li", {}, h("a", { href: `#/feature/${encodeURIComponent(run)}/${r.id}` }, `#${r.id}`), ` cos ${r.cos.toFixed(2)}`)));
  return [h("h2", {}, "Similar features"), h("div", { class: "row", id: "similar" },
    h("div", { class: "card" }, h("b", {}, "writes alike (decoder)"), list(sim.decoder)),
    h("div", { class: "card" }, h("b", {}, "reads alike (encoder)"), list(sim.encoder)))];
}

async function searchPage(run, text) {
  const r = await api(`/api/search?${q({ run, q: text })}`);
  const shown = r.total > r.results.length ? `${r.total} features match; the ${r.results.length} most relevant:` : `${r.total} feature${r.total === 1 ? "" : "s"} match, most relevant first:`;
  render(h("h1", {}, `Search “${text}” in ${run}`), featureNav(run, null, r.width),
    r.results.length ? [h("p", { id: "search-count" }, shown), h("ol", { id: "search-results" }, r.results.map((x) => h("li", {}, h("a", { href: `#/feature/${encodeURIComponent(run)}/${x.id}` }, `#${x.id}`), " ", h("span", { class: "muted" }, x.why.join("; ")))))]
      : h("p", { id: "search-count" }, "0 features match: none has that word in its label or explanation, fires on that token, promotes it or is excited by it."));
}

async function conceptsPage(run) {
  const pos = h("textarea", { rows: 8, cols: 60, id: "positive", placeholder: "texts that show the concept, one per line" });
  const neg = h("textarea", { rows: 8, cols: 60, id: "negative", placeholder: "texts that do not, one per line" });
  const out = h("div", { id: "concepts-out" });
  const go = async (e) => {
    e.preventDefault();
    out.replaceChildren(h("p", { class: "muted" }, "reading the texts with the model…"));
    try {
      const r = await api("/api/concepts", { run, positive: pos.value, negative: neg.value });
      out.replaceChildren(h("p", {}, `${r.positive} positive, ${r.negative} negative texts. AUROC: the chance that a positive text's largest activation beats a negative one's.`),
        table(["feature", "AUROC", "mean +", "mean −", "fires +", "fires −", "label / strongest example"], r.features.map((c) => [
          h("a", { href: `#/feature/${encodeURIComponent(run)}/${c.feature}` }, `#${c.feature}`), fmt(c.auroc), fmt(c.mean_pos), fmt(c.mean_neg), pct(c.fires_pos), pct(c.fires_neg), c.label || c.example])));
    } catch (err) { out.replaceChildren(h("p", { class: "error" }, err.message)); }
  };
  render(h("h1", {}, `Concepts in ${run}`), h("p", { class: "muted" }, "Which features separate two sets of texts? Each text is read by the model; features are ranked by AUROC."),
    h("form", { class: "card", onsubmit: go, id: "concepts-form" }, h("div", { class: "row" }, pos, neg), h("p", {}, h("button", { class: "primary" }, "rank features"))), out);
}

// ---------------------------------------------------------------------------------------------- blind rating
async function rateStart() {
  const d = await api("/api/runs");
  const old = (await api("/api/ratings")).sessions;
  const withStore = d.runs.filter((r) => r.store);
  const pick = (id) => h("select", { id }, withStore.map((r) => h("option", { value: r.path }, r.path)));
  const a = pick("run-a"), b = pick("run-b");
  if (withStore.length > 1) b.selectedIndex = 1;
  const n = h("input", { type: "text", value: "10", size: 4, id: "rate-n" });
  const msg = h("p", { class: "error" });
  render(h("h1", {}, "Blind rating"),
    h("p", {}, "Features are drawn at random from two runs and shown in random order, without saying which run they come from ",
      "and without activation values (highlighting only). Rate each one; the tally per run appears at the end."),
    withStore.length < 2 ? h("p", { class: "error" }, "Needs two runs with feature stores (`transcoders features RUN`).") :
      h("form", { class: "card", onsubmit: async (e) => {
        e.preventDefault();
        try { const s = await api("/api/rating/start", { runs: [a.value, b.value], n: +n.value }); location.hash = `#/rate/${s.session}`; }
        catch (err) { msg.textContent = err.message; }
      } }, "run A ", a, "  run B ", b, "  features per run ", n, " ", h("button", { class: "primary", id: "rate-go" }, "start")),
    msg,
    old.length ? h("h2", {}, "Earlier sessions") : "",
    old.length ? h("table", { id: "rate-sessions" },
      h("tr", {}, ["started", "runs", "rated", ""].map((t) => h("th", {}, t))),
      old.map((s) => h("tr", {}, h("td", {}, new Date(s.started * 1000).toLocaleString()), h("td", {}, s.runs.join(" vs ")),
        h("td", { class: "num" }, `${s.rated} / ${s.total}`),
        h("td", {}, h("a", { href: `#/rate/${s.session}` }, s.done ? "results" : "continue"))))) : "");
}

async function ratePage(sid) {
  const it = await api(`/api/rating?${q({ session: sid })}`);
  if (it.done) return showTally(it);
  const single = h("input", { type: "checkbox", id: "single" });
  const answer = (v) => async () => {
    try { const next = await api("/api/rating/answer", { session: sid, index: it.index, interpretable: v, single_token: single.checked });
      if (next.done) showTally(next); else ratePage(sid); }
    catch (err) { fail(err); }
  };
  render(h("h1", {}, `Blind rating: feature ${it.index + 1} of ${it.total}`),
    h("div", { class: "card", id: "rate-examples" }, it.examples.map((ex) => example(ex, 1, false))),
    h("p", {}, h("label", {}, single, " fires on a single token (or one token type)")),
    h("p", { class: "nav" }, "Interpretable? ",
      h("button", { onclick: answer("yes"), id: "ans-yes" }, "yes"), h("button", { onclick: answer("maybe"), id: "ans-maybe" }, "maybe"),
      h("button", { onclick: answer("no"), id: "ans-no" }, "no")));
}
const share = (v) => (v && v[0] === v[0] ? `${(100 * v[0]).toFixed(0)}% [${(100 * v[1]).toFixed(0)}, ${(100 * v[2]).toFixed(0)}]` : "–");
function showTally(it) {
  render(h("h1", {}, "Blind rating: results"),
    h("table", { id: "tally" }, h("tr", {}, ["run", "rated", "yes", "maybe", "no", "single-token", "share yes (95% interval)", "yes or maybe"].map((t) => h("th", {}, t))),
      it.tally.map((t) => h("tr", {}, h("td", {}, t.run), h("td", { class: "num" }, t.rated), h("td", { class: "num" }, t.yes),
        h("td", { class: "num" }, t.maybe), h("td", { class: "num" }, t.no), h("td", { class: "num" }, t.single_token),
        h("td", { class: "num" }, share(t.yes_share)), h("td", { class: "num" }, share(t.yes_or_maybe_share))))),
    h("p", { class: "muted" }, "Intervals are Wilson 95% intervals for the share of rated features; two runs differ clearly only where their intervals do not overlap."),
    h("p", {}, h("a", { href: "#/rate" }, "start another")));
}

// ---------------------------------------------------------------------------------------------- circuits
function graphList(graphs) {  // newest first, with what tells two graphs of one prompt apart
  return h("table", { id: "graph-list" }, h("tr", {}, ["graph", "set", "mode", "target", "settings", "made"].map((t) => h("th", {}, t))),
    graphs.map((g) => h("tr", {},
      h("td", {}, h("a", { href: `#/graph/${encodeURIComponent(g.path)}`, title: g.name }, g.prompt ? `“${g.prompt.length > 50 ? g.prompt.slice(0, 50) + "…" : g.prompt}”` : g.name)),
      h("td", { class: "muted" }, g.set), h("td", {}, g.mode), h("td", {}, (g.targets || []).slice(0, 3).join(", ") + ((g.targets || []).length > 3 ? ", …" : "")),
      h("td", { class: "muted" }, Object.entries(g.settings || {}).map(([k, v]) => `${k} ${v}`).join(", ")), h("td", { class: "muted" }, g.date))));
}
async function graphsPage() {
  const d = await api("/api/runs");
  const set = h("select", { id: "c-set" }, d.sets.map((s) => h("option", { value: s }, s)));
  const prompt = h("input", { type: "text", size: 60, id: "c-prompt", placeholder: "The war lasted from the year 1732 to the year 17" });
  const target = h("input", { type: "text", size: 22, id: "c-target", placeholder: "target (default: top token)" });
  const mode = h("select", { id: "c-mode" }, h("option", { value: "paths" }, "paths"), h("option", { value: "graph" }, "graph"));
  const msg = h("span", { class: "muted", id: "c-msg" });
  const form = h("form", { class: "card", onsubmit: async (e) => {
    e.preventDefault();
    msg.textContent = "computing… (the first circuit loads the model)";
    try { const r = await api("/api/graph/compute", { set: set.value, prompt: prompt.value, target: target.value, mode: mode.value });
      location.hash = `#/graph/${encodeURIComponent(r.path)}`; }
    catch (err) { msg.textContent = err.message; msg.className = "error"; }
  } }, "set ", set, " prompt ", prompt, " ", target, " ", mode, " ", h("button", { class: "primary", id: "c-go" }, "trace"), " ", msg);
  render(h("h1", {}, "Circuit graphs"),
    d.sets.length ? form : h("p", { class: "muted" }, "Train a transcoder set (`transcoders train --layers all`) to trace circuits here."),
    d.graphs.length ? graphList(d.graphs) : h("p", {}, "No graphs yet: trace one above or with `transcoders circuit --set SET --prompt TEXT`."));
}

const MAX_EDGES = 1500;  // more lines than this hide the structure (and slow the page)
const NODE_COLOR = { "cross layer transcoder": "#4c6ef5", "mlp reconstruction error": "#adb5bd", "attention head": "#ae3ec9",
  embedding: "#37b24d", logit: "#f08c00", bias: "#495057", "skip connection": "#20c997", pruned: "#e9ecef" };
const NODE_NAME = { "cross layer transcoder": "feature", "mlp reconstruction error": "MLP error", "attention head": "attention head",
  embedding: "token embedding", logit: "logit", bias: "biases", "skip connection": "skip path", pruned: "not followed" };

async function graphPage(path, query) {
  const g = await api(`/api/graph?${q({ path })}`);
  const info = (g.metadata && g.metadata.info) || {};
  const paths = info.mode === "paths";
  const toks = (g.metadata && g.metadata.prompt_tokens) || [];
  // rows: L0..Ln-1 for the blocks (n from the feature, error and head nodes), "out" above them for what comes after
  // the last block, logits on top; embeddings and biases (inputs and constants) at the bottom
  const blockTypes = new Set(["cross layer transcoder", "mlp reconstruction error", "attention head"]);
  const blockMax = Math.max(0, ...g.nodes.filter((n) => blockTypes.has(n.feature_type)).map((n) => parseInt(n.layer, 10)).filter((L) => !Number.isNaN(L)));
  const layerOf = (n) => {
    if (n.feature_type === "logit") return 99;
    if (n.feature_type === "embedding" || n.feature_type === "bias") return -1;
    const L = parseInt(n.layer, 10);
    return Number.isNaN(L) ? 99 : Math.min(L, blockMax + 1);
  };
  const hasOut = g.nodes.some((n) => layerOf(n) === blockMax + 1);
  const maxL = blockMax + 1 + (hasOut ? 1 : 0);
  const logits = g.nodes.filter((n) => n.feature_type === "logit").sort((a, b) => (b.token_prob || 0) - (a.token_prob || 0));
  const score = (n) => (paths ? Math.abs(n.influence || 0) : n.influence === null || n.influence === undefined ? 0 : 1 - n.influence);
  const maxScore = Math.max(1e-9, ...g.nodes.map(score));
  const byId = new Map(g.nodes.map((n) => [n.node_id, n]));

  // the view state: the URL's (Neuronpedia's names: pinnedIds, supernodes, clickedId; and prune, only, zoom), else
  // what was saved with the graph (its qParams), else the defaults
  const url = new URLSearchParams(query || "");
  const saved = g.qParams || {};
  const known = (id) => byId.has(id);
  const pinned = new Set((url.has("pinnedIds") ? url.get("pinnedIds").split(",") : saved.pinnedIds || []).filter(known));
  let groups = readGroups(url.has("supernodes") ? url.get("supernodes") : saved.supernodes, known);
  let selected = known(url.get("clickedId") || "") ? url.get("clickedId") : "";
  let zoom = Math.min(4, Math.max(0.1, +url.get("zoom") || 1));
  const slider = h("input", { type: "range", min: 0, max: 100, value: url.has("prune") ? +url.get("prune") : paths ? 10 : 50, id: "prune" });
  const subgraph = h("input", { type: "checkbox", id: "subgraph", checked: url.get("only") === "1" });
  function writeURL() {  // the whole view, so that a reload or a shared link shows the same
    const p = new URLSearchParams();
    if (pinned.size) p.set("pinnedIds", [...pinned].join(","));
    if (groups.length) p.set("supernodes", JSON.stringify(groups));
    if (selected) p.set("clickedId", selected);
    p.set("prune", slider.value);
    if (subgraph.checked) p.set("only", "1");
    if (zoom !== 1) p.set("zoom", zoom.toFixed(2));
    history.replaceState(null, "", `#/graph/${encodeURIComponent(path)}?${p}`);
  }

  const holder = h("div", { class: "graph-wrap", id: "graph-wrap" });
  const hint = h("p", { class: "muted" }, "Hover a node for details; click one to keep them here with its top examples; shift-click to pin. Drag to pan, ctrl+wheel or the buttons to zoom.");
  const side = h("div", { class: "card", id: "node-info" }, hint);
  const pinList = h("ul", { class: "pinned", id: "pinned" });
  const groupList = h("ul", { class: "pinned", id: "supernodes" });
  const msg = h("p", { class: "muted", id: "view-msg" });
  // no two nodes overlap: nodes sharing a (layer, token) cell sit side by side STEP apart, and each token's column
  // is as wide as its fullest cell (a wide graph scrolls sideways)
  const RH = 19, STEP = 12, R = 4.5, ROWS_W = 34;  // ROWS_W: the row names, left of the first column (at 40)
  const cells = new Map();
  for (const n of g.nodes) {
    if (n.feature_type === "logit") continue;  // logits get the top row to themselves
    const k = `${layerOf(n)}:${n.ctx_idx ?? 0}`;
    if (!cells.has(k)) cells.set(k, []);
    cells.get(k).push(n);
  }
  const nCols = Math.max(toks.length, 1 + Math.max(0, ...g.nodes.map((n) => n.ctx_idx ?? 0)));
  const colW = Array.from({ length: nCols }, () => 70);
  for (const [k, list] of cells) { const i = +k.split(":")[1]; colW[i] = Math.max(colW[i], list.length * STEP + 14); }
  const colX = [];  // each column's centre
  colW.reduce((x, w, i) => { colX[i] = x + w / 2; return x + w; }, 40);
  const W = Math.max(700, 40 + colW.reduce((a, b) => a + b, 0) + 40), H = RH * (maxL + 2) + 80;
  const cellX = new Map();
  for (const [k, list] of cells) {
    const c = colX[+k.split(":")[1]];
    list.forEach((n, j) => cellX.set(n.node_id, c - ((list.length - 1) * STEP) / 2 + j * STEP));
  }
  const logitX = new Map(logits.map((n, i) => [n.node_id, logits.length === 1 ? colX[n.ctx_idx ?? 0] : 60 + (i * (W - 140)) / (logits.length - 1)]));
  const X = (n) => (logitX.has(n.node_id) ? logitX.get(n.node_id) : cellX.get(n.node_id));
  const Y = (n) => { const L = layerOf(n); return L === 99 ? 34 : L === -1 ? H - 30 : H - 50 - RH * L; };

  const inputs = new Map(), outputs = new Map();  // a link's source feeds its target
  for (const l of g.links) {
    if (!inputs.has(l.target)) inputs.set(l.target, []);
    if (!outputs.has(l.source)) outputs.set(l.source, []);
    inputs.get(l.target).push(l);
    outputs.get(l.source).push(l);
  }
  const edgeList = (title, links, end) => h("div", { class: "edges" }, h("b", {}, `${title} (${links.length})`), h("ol", {},
    [...links].sort((a, b) => Math.abs(b.weight) - Math.abs(a.weight)).slice(0, 6).map((l) => {
      const other = byId.get(l[end]);
      return h("li", { class: l.weight >= 0 ? "pos" : "neg" }, `${l.weight >= 0 ? "+" : ""}${fmt(l.weight)}  `, other ? nodeName(other) : l[end]);
    })));
  const edgeLists = (ids) => {  // a node's (or a supernode's members') links to the rest of the graph
    const inside = new Set(ids);
    const ins = ids.flatMap((id) => inputs.get(id) || []).filter((l) => !inside.has(l.source));
    const outs = ids.flatMap((id) => outputs.get(id) || []).filter((l) => !inside.has(l.target));
    return [edgeList("strongest inputs", ins, "source"), edgeList("strongest outputs", outs, "target")];
  };
  const details = (n) => [h("pre", {}, describe(n)), ...edgeLists([n.node_id])];

  async function select(n) {  // keep a node's details (and a feature's examples) in the panel
    selected = n ? n.node_id : "";
    writeURL();
    draw();
    if (!n) { side.replaceChildren(hint); return; }
    side.replaceChildren(...details(n));
    if (n.feature_type !== "cross layer transcoder" || !n.run) return;
    const box = h("div", { id: "node-examples" }, h("p", { class: "muted" }, "loading its top examples…"));
    side.prepend(h("p", {}, h("a", { id: "open-feature", href: `#/feature/${encodeURIComponent(n.run)}/${n.feature_index}` }, "open the feature page →")), box);
    try {
      const f = await api(`/api/feature/brief?${q({ run: n.run, id: n.feature_index })}`);
      if (selected !== n.node_id) return;
      box.replaceChildren(h("b", {}, f.label || f.auto_label || `feature ${f.id}`, f.label || !f.auto_label ? "" : " (auto)"),
        h("div", { class: "muted" }, `density ${pct(f.density)} · max activation ${fmt(f.max_act)}`),
        ...(f.top.length ? f.top.map((ex) => example(ex, f.max_act)) : [h("p", { class: "muted" }, "never fired")]));
    } catch (e) {
      box.replaceChildren(h("p", { class: "muted" }, e.message));
    }
  }
  function showGroup(i) {
    const members = groups[i].slice(1).filter(known);
    side.replaceChildren(h("pre", {}, `supernode “${groups[i][0]}”: ${members.length} nodes`),
      h("ul", {}, members.map((id) => h("li", {}, nodeName(byId.get(id))))), ...edgeLists(members));
  }

  function draw() {
    const cut = +slider.value / 100;
    const onlyPinned = subgraph.checked && (pinned.size > 0 || groups.length > 0);
    const groupOf = new Map();
    groups.forEach((gr, i) => gr.slice(1).forEach((id) => groupOf.set(id, i)));
    const keep = new Map(g.nodes.filter((n) => groupOf.has(n.node_id) || (onlyPinned ? pinned.has(n.node_id) :
      cut === 0 || pinned.has(n.node_id) || n.node_id === selected || n.feature_type === "logit" || n.feature_type === "embedding" ||
      (paths ? score(n) >= cut * maxScore : n.influence === null || n.influence === undefined || n.influence <= 1 - cut))).map((n) => [n.node_id, n]));
    // a supernode stands where its members' centre is; links to and from its members are summed into its links
    const rep = (id) => (groupOf.has(id) ? `group:${groupOf.get(id)}` : id);
    const spot = new Map();
    for (const n of keep.values()) if (!groupOf.has(n.node_id)) spot.set(n.node_id, [X(n), Y(n)]);
    groups.forEach((gr, i) => {
      const ms = gr.slice(1).map((id) => byId.get(id)).filter(Boolean);
      spot.set(`group:${i}`, [ms.reduce((a, n) => a + X(n), 0) / ms.length, ms.reduce((a, n) => a + Y(n), 0) / ms.length]);
    });
    const summed = new Map();
    for (const l of g.links) {
      if (!keep.has(l.source) || !keep.has(l.target)) continue;
      const a = rep(l.source), b = rep(l.target);
      if (a === b) continue;
      const k = `${a}\u0000${b}`;
      summed.set(k, (summed.get(k) || 0) + l.weight);
    }
    const among = [...summed].map(([k, weight]) => { const [source, target] = k.split("\u0000"); return { source, target, weight }; });
    const links = among.length > MAX_EDGES ? [...among].sort((a, b) => Math.abs(b.weight) - Math.abs(a.weight)).slice(0, MAX_EDGES) : among;
    const maxW = Math.max(1e-9, ...links.map((l) => Math.abs(l.weight)));
    const focus = selected ? rep(selected) : "";
    const edges = links.map((l) => { const [x1, y1] = spot.get(l.source), [x2, y2] = spot.get(l.target), w = Math.abs(l.weight) / maxW;
      const dim = focus && l.source !== focus && l.target !== focus ? 0.2 : 1;
      return svg("line", { x1, y1, x2, y2, stroke: l.weight >= 0 ? "#e8590c" : "#1c7ed6",
        "stroke-opacity": (dim * (0.15 + 0.7 * w)).toFixed(2), "stroke-width": (0.5 + 3 * w).toFixed(2) }); });
    const nodes = [...keep.values()].filter((n) => !groupOf.has(n.node_id)).map((n) => svg("circle", {
      cx: X(n), cy: Y(n), r: pinned.has(n.node_id) || n.node_id === selected ? R + 1 : R, fill: NODE_COLOR[n.feature_type] || "#868e96",
      stroke: n.node_id === selected ? "#1c7ed6" : pinned.has(n.node_id) ? "#000" : "#fff", "stroke-width": n.node_id === selected ? 2.5 : 1.5,
      class: "node", "data-id": n.node_id,
      onmousemove: (ev) => { showTip(ev, describe(n)); if (!selected) side.replaceChildren(...details(n)); },
      onmouseleave: hideTip,
      onclick: (ev) => {
        ev.stopPropagation();
        if (ev.shiftKey) { pinned.has(n.node_id) ? pinned.delete(n.node_id) : pinned.add(n.node_id); writeURL(); draw(); return; }
        select(selected === n.node_id ? null : n);
      } }));
    const supers = groups.map((gr, i) => { const [x, y] = spot.get(`group:${i}`);
      return svg("g", { class: "supernode", "data-name": gr[0],
        onmousemove: (ev) => { showTip(ev, `${gr[0]} (${gr.length - 1} nodes)`); if (!selected) showGroup(i); }, onmouseleave: hideTip,
        onclick: (ev) => { ev.stopPropagation(); selected = ""; writeURL(); draw(); showGroup(i); } },
        svg("rect", { x: x - 10, y: y - 7, width: 20, height: 14, rx: 4, fill: "#fff3bf", stroke: "#f59f00", "stroke-width": 2 }),
        svg("text", { x, y: y - 10, "text-anchor": "middle", class: "sn-label" }, document.createTextNode(gr[0].slice(0, 24)))); });
    const labels = toks.map((t, i) => svg("text", { x: colX[i], y: H - 8, "text-anchor": "middle" }, document.createTextNode(JSON.stringify(t).slice(0, 10))));
    // the row names stay at the left edge of what is in view when the graph scrolls sideways
    const rows = svg("svg", { width: Math.round(ROWS_W * zoom), height: Math.round(H * zoom), viewBox: `0 0 ${ROWS_W} ${H}`, id: "graph-rows",
      style: `left: ${holder.scrollLeft}px` }, Array.from({ length: maxL }, (_, L) =>
      svg("text", { x: 4, y: H - 46 - RH * L }, document.createTextNode(L > blockMax ? "out" : `L${L}`))));
    const logitLabels = logits.filter((n) => keep.has(n.node_id)).map((n) => svg("text", { x: X(n), y: 16, "text-anchor": "middle", class: "logit-label" },
      document.createTextNode(`${logitName(n)}${tokenProb(n) !== null ? ` ${(100 * tokenProb(n)).toFixed(0)}%` : ""}`)));
    const nodeLabels = [...keep.values()].filter((n) => n.label && !groupOf.has(n.node_id) && (pinned.has(n.node_id) || n.node_id === selected))
      .map((n) => svg("text", { x: X(n) + 7, y: Y(n) - 6, class: "node-label" }, document.createTextNode(n.label.slice(0, 32))));
    holder.replaceChildren(svg("svg", { width: Math.round(W * zoom), height: Math.round(H * zoom), viewBox: `0 0 ${W} ${H}`, id: "graph-svg" },
      edges, nodes, supers, labels, logitLabels, nodeLabels), rows);
    pinList.replaceChildren(...[...pinned].map((id) => h("li", {}, nodeName(byId.get(id)), " ",
      h("button", { class: "x", title: "unpin", onclick: () => { pinned.delete(id); writeURL(); draw(); } }, "×"))));
    groupList.replaceChildren(...groups.map((gr, i) => h("li", {}, h("b", {}, gr[0]), ` (${gr.length - 1} nodes) `,
      h("button", { class: "x", title: "ungroup", onclick: () => { groups = groups.filter((_, j) => j !== i); writeURL(); draw(); } }, "ungroup"))));
    count.textContent = `${keep.size} nodes${groups.length ? ` (${groups.length} supernodes)` : ""}; ${links.length === among.length ? "" : `strongest ${links.length} of `}${among.length} links shown`;
  }
  const count = h("span", { class: "muted", id: "graph-count" });
  slider.addEventListener("input", () => { writeURL(); draw(); });
  subgraph.addEventListener("change", () => { writeURL(); draw(); });

  function setZoom(z) {  // about the centre of what is in view
    const old = zoom, cx = holder.scrollLeft + holder.clientWidth / 2, cy = holder.scrollTop + holder.clientHeight / 2;
    zoom = Math.min(4, Math.max(0.1, z));
    writeURL();
    draw();
    holder.scrollLeft = (cx * zoom) / old - holder.clientWidth / 2;
    holder.scrollTop = (cy * zoom) / old - holder.clientHeight / 2;
  }
  holder.addEventListener("scroll", () => { const r = holder.querySelector("#graph-rows"); if (r) r.style.left = `${holder.scrollLeft}px`; });
  holder.addEventListener("wheel", (ev) => { if (ev.ctrlKey) { ev.preventDefault(); setZoom(zoom * (ev.deltaY < 0 ? 1.15 : 1 / 1.15)); } }, { passive: false });
  let drag = null;  // drag the background to pan; a click on it (no drag) lets go of the selected node
  holder.addEventListener("mousedown", (ev) => { if (ev.button === 0) drag = { x: ev.clientX, y: ev.clientY, sl: holder.scrollLeft, st: holder.scrollTop, moved: false }; });
  const onMove = (ev) => {
    if (!holder.isConnected) { window.removeEventListener("mousemove", onMove); window.removeEventListener("mouseup", onUp); return; }
    if (!drag) return;
    const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
    holder.scrollLeft = drag.sl - dx; holder.scrollTop = drag.st - dy;
  };
  const onUp = () => { setTimeout(() => { drag = null; }, 0); };
  window.addEventListener("mousemove", onMove);
  window.addEventListener("mouseup", onUp);
  holder.addEventListener("click", () => { if (drag && drag.moved) return; if (selected) select(null); });

  const snName = h("input", { type: "text", id: "sn-name", placeholder: "name, e.g. say a capital", size: 18 });
  function group() {
    const ids = [...pinned].filter((id) => !groups.some((gr) => gr.includes(id)));
    const name = snName.value.trim();
    if (ids.length < 2) { msg.textContent = "pin two or more nodes (shift-click), then group them"; return; }
    if (!name) { msg.textContent = "give the supernode a name"; return; }
    groups = [...groups, [name.slice(0, 80), ...ids]];
    ids.forEach((id) => pinned.delete(id));
    snName.value = "";
    msg.textContent = "";
    writeURL();
    draw();
  }
  async function saveView() {
    try {
      await api("/api/graph/view", { path, pinnedIds: [...pinned], supernodes: groups });
      msg.textContent = "saved with the graph: pins and supernodes come back when it is opened without a view in its link";
    } catch (e) { msg.textContent = e.message; }
  }
  const zoomBar = h("span", { class: "zoom" }, h("button", { id: "zoom-out", title: "zoom out", onclick: () => setZoom(zoom / 1.25) }, "−"),
    h("button", { id: "zoom-in", title: "zoom in", onclick: () => setZoom(zoom * 1.25) }, "+"),
    h("button", { id: "zoom-fit", title: "fit the width", onclick: () => setZoom(Math.min(1, holder.clientWidth / W)) }, "fit"));
  render(h("h1", {}, `Circuit: ${(g.metadata && g.metadata.prompt) || path}`), g.stores ? buildCard(g.stores) : null,
    h("p", { class: "muted" }, `${info.mode || "graph"} · targets: ${(info.targets || []).join(", ")}` +
      (info.replacement_score !== undefined ? ` · replacement ${fmt(info.replacement_score)} · completeness ${fmt(info.completeness_score)}` : "")),
    h("p", {}, "pruning ", slider, " ", count, "   ", h("label", {}, subgraph, " pinned and grouped only"), "   ", zoomBar),
    h("div", { class: "graph-layout" }, holder, h("div", { class: "graph-side" }, legend(g.nodes), side,
      h("h2", {}, "Pinned (shift-click)"), pinList,
      h("div", {}, snName, " ", h("button", { id: "sn-group", onclick: group }, "group pinned")),
      h("h2", {}, "Supernodes"), groupList,
      h("p", {}, h("button", { id: "save-view", onclick: saveView }, "save pins and supernodes with the graph")), msg)));
  draw();
  if (selected) {
    select(byId.get(selected));
    // a link to a node opens with that node in the middle of the view (the graph may be wider than the screen)
    const n = byId.get(selected), x = X(n), y = Y(n);
    if (Number.isFinite(x) && Number.isFinite(y)) {
      holder.scrollLeft = x * zoom - holder.clientWidth / 2;
      holder.scrollTop = y * zoom - holder.clientHeight / 2;
    }
  }
}
function buildCard(st) {  // a set whose layers lack dashboards' data: build it for every layer in one pass, and follow
  const card = h("div", { class: "card", id: "build-card" });
  const say = (b) => {
    if (b.running) return card.replaceChildren(h("p", {}, `building dashboards' data for ${st.set}: ${b.tokens_done.toLocaleString()} of ${b.tokens.toLocaleString()} tokens read in every layer…`));
    if (!st.missing.length && !b.error) return card.replaceChildren(h("p", { class: "muted", id: "build-done" }, `dashboards' data built: ${b.tokens_done.toLocaleString()} tokens read in every layer of ${st.set}`));
    card.replaceChildren(...(b.error ? [h("p", { class: "error" }, b.error)] : []),
      h("p", {}, `${st.missing.length} of the ${st.runs} layers in this graph have no dashboards' data, so their features show no examples or labels. `,
        h("button", { id: "build-features", onclick: start }, `build it for all ${b.runs} layers of ${st.set} (one pass over ${b.tokens.toLocaleString()} held-out tokens)`)),
      h("p", { class: "muted" }, `the same as \`transcoders features ${st.set}\``));
  };
  async function follow() {
    const b = await api(`/api/features/build?${q({ set: st.set })}`);
    if (!card.isConnected) return;
    if (!b.running && !b.error) { route(); return; }  // built: draw the graph again, with its labels
    say(b);
    if (b.running) setTimeout(follow, 1500);
  }
  async function start() {
    try { say(await api("/api/features/build", { set: st.set })); setTimeout(follow, 500); } catch (e) { card.replaceChildren(h("p", { class: "error" }, e.message)); }
  }
  say(st.build);
  if (st.build.running) setTimeout(follow, 1500);
  return card;
}
function readGroups(value, known) {  // [[name, node_id, ...], ...] from JSON text or a saved list; unknown ids dropped
  let list = value;
  if (typeof value === "string") { try { list = JSON.parse(value); } catch (e) { list = []; } }
  if (!Array.isArray(list)) return [];
  const seen = new Set();
  return list.filter((gr) => Array.isArray(gr) && typeof gr[0] === "string")
    .map((gr) => [gr[0], ...gr.slice(1).filter((id) => typeof id === "string" && known(id) && !seen.has(id) && seen.add(id))])
    .filter((gr) => gr.length >= 3);
}
function logitName(n) {  // a logit node's token (clerp `Output " Paris" (p=0.412)`) or target (`logit('4')-logit('3')` reads '4'−'3')
  const m = (n.clerp || "").match(/^Output (.*?)(?: \(p=[^)]*\))?$/);
  const name = m ? m[1] : (n.clerp || n.node_id).replace(/\)-(?=(mean )?logit\(|mean$)/g, ")−").replace(/logit\((.*?)\)(?=−|$)/g, "$1");
  return name.length > 16 ? name.slice(0, 15) + "…" : name;
}
function tokenProb(n) {  // the model's probability of a single token's logit node (its clerp reads `Output ...`); else null
  return /^Output /.test(n.clerp || "") && n.token_prob != null ? n.token_prob : null;
}
function nodeName(n) {  // short: a feature as L:index@token, a logit as its token, else its id
  if (n.feature_type === "cross layer transcoder") return `${n.layer}:${n.feature_index ?? n.node_id.split("_")[1]}@${n.ctx_idx}` + (n.label ? ` “${n.label.slice(0, 40)}”` : "");
  if (n.feature_type === "logit") return `logit ${logitName(n)}`;
  return `${NODE_NAME[n.feature_type] || n.feature_type} ${n.node_id}`;
}
function legend(nodes) {  // the node kinds this graph has, with their colours
  const kinds = [...new Set(nodes.map((n) => n.feature_type))];
  return h("div", { class: "card legend", id: "legend" }, kinds.map((k) => h("span", { class: "chip" },
    svg("svg", { width: 10, height: 10 }, svg("circle", { cx: 5, cy: 5, r: 4.5, fill: NODE_COLOR[k] || "#868e96" })), ` ${NODE_NAME[k] || k}`)),
    h("div", { class: "muted" }, "edges: orange raises, blue lowers; thicker is stronger"));
}
function describe(n) {
  const parts = [`${n.node_id}  (${n.feature_type})`, `layer ${n.layer}, token ${n.ctx_idx}`];
  if (n.label) parts.push(`“${n.label}”${n.label_auto ? " (auto)" : ""}`);
  if (n.clerp) parts.push(n.clerp);
  if (n.activation !== null && n.activation !== undefined) parts.push(`activation ${fmt(n.activation)}`);
  if (n.influence !== null && n.influence !== undefined) parts.push(`influence ${fmt(n.influence)}`);
  if (tokenProb(n) !== null) parts.push(`probability ${fmt(tokenProb(n))}`);
  if (n.run) parts.push(`click: its top examples here (run ${n.run})`);
  return parts.join("\n");
}
