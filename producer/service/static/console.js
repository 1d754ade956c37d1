// rerankq console: polls the JSON API, fills the server-rendered tables, draws charts with the vendored
// uPlot (static/vendor). No framework. Times are shown as the server shows them (producer/service/timefmt.py).
"use strict";
const rerankq = (() => {
  const fmt = (n) => Number(n).toLocaleString("en-US");
  const $ = (sel) => document.querySelector(sel);
  const text = (tag, value, cls) => {
    const el = document.createElement(tag);
    el.textContent = value;
    if (cls) el.className = cls;
    return el;
  };
  const cell = (...children) => {
    const td = document.createElement("td");
    td.append(...children);
    return td;
  };
  const terminal = (s) => !["queued", "running"].includes(s);
  const done = (j) => j.pairs_scored + j.pairs_failed + (j.pairs_reused || 0);
  const eta = (j) => {
    const left = j.pairs_total - done(j);
    return !terminal(j.state) && j.pairs_per_second && left > 0 ? `${Math.round(left / j.pairs_per_second)} s` : "–";
  };

  // --- time: "2026-12-01 00:55:06 UTC (3 min ago)", as timefmt.when renders it ---
  const absolute = (iso) => new Date(iso).toISOString().slice(0, 19).replace("T", " ") + " UTC";
  // from the second shown, against one `now` for the whole page: two times of one second read alike
  function relative(iso, now) {
    const s = ((now ?? Date.now()) - Math.floor(new Date(iso).getTime() / 1000) * 1000) / 1000;
    if (s < 5) return "just now";
    if (s < 60) return `${Math.floor(s)} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 48 * 3600) return `${Math.floor(s / 3600)} h ago`;
    return `${Math.floor(s / 86400)} days ago`;
  }
  function when(iso, now) {
    if (!iso) return text("span", "–", "muted");
    const t = document.createElement("time");
    t.dateTime = new Date(iso).toISOString();
    t.append(absolute(iso) + " ", text("span", `(${relative(iso, now)})`, "ago"));
    return t;
  }
  const setWhen = (el, iso) => el.replaceChildren(when(iso));
  // a message's `backticked` commands as <code>, as the server's `ticks` filter does
  const setMessage = (el, message) => el.replaceChildren(...String(message).split("`").map((p, i) => (i % 2 ? text("code", p) : p)));
  // every "… ago" on the page from one `now` (after a refresh redrew some of them, and every 5 s)
  function refreshAgo() {
    const now = Date.now();
    document.querySelectorAll("time[datetime] .ago").forEach((a) => { a.textContent = `(${relative(a.parentElement.dateTime, now)})`; });
  }
  setInterval(refreshAgo, 5000);

  // a signed-in page's CSRF token (producer/service/security.py): sent with every request that changes something
  const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  async function getJSON(url, options) {
    options = Object.assign({ credentials: "same-origin" }, options || {});
    if (options.method && options.method !== "GET") options.headers = Object.assign({ "X-CSRF-Token": csrf() }, options.headers || {});
    const r = await fetch(url, options);
    const body = await r.json().catch(() => ({ detail: `HTTP ${r.status}` }));
    if (!r.ok) throw new Error(body.detail || `HTTP ${r.status}`);
    return body;
  }

  // --- progress: reused, scored and failed pairs are all done ---
  function bar(j) {
    const el = document.createElement("div");
    el.className = "bar";
    el.setAttribute("role", "img");
    el.setAttribute("aria-label", "progress");
    el.title = "reused · scored · failed";
    for (const [cls, n] of [["reused", j.pairs_reused || 0], ["scored", j.pairs_scored], ["failed", j.pairs_failed]]) {
      const seg = text("span", "", `seg ${cls}`);
      seg.style.width = `${j.pairs_total ? (100 * n / j.pairs_total).toFixed(2) : 0}%`;
      el.append(seg);
    }
    return el;
  }

  // a hub id, or a model directory's last part (its whole path in the title), as the server's `model_name`
  function modelCell(model) {
    const td = text("td", !model ? "–" : /^[/.~]/.test(model) ? model.replace(/\/+$/, "").split("/").pop() : model, "model");
    td.title = model || "";
    return td;
  }

  function jobRow(j) {
    const tr = document.createElement("tr");
    tr.dataset.job = j.job_id;
    const link = document.createElement("a");
    link.href = `/jobs/${j.job_id}`;
    link.append(text("code", j.job_id.slice(0, 8)));
    tr.append(
      cell(link),
      text("td", j.name || "", "name"),
      modelCell(j.model),
      text("td", j.state, `state state-${j.state}`),
      cell(bar(j)),
      text("td", `${fmt(done(j))} / ${fmt(j.pairs_total)}`, "num done"),
      text("td", fmt(j.pairs_scored), "num scored"),
      text("td", fmt(j.pairs_reused || 0), "num reused"),
      text("td", fmt(j.pairs_failed), "num failed"),
      text("td", j.pairs_per_second ? j.pairs_per_second.toFixed(1) : "–", "num"),
      text("td", eta(j), "num"),
      cell(when(j.created_at)),
    );
    return tr;
  }

  function pollJobs(table) {
    const body = table.tBodies[0];
    const tick = async () => {
      try {
        const jobs = await getJSON("/v1/jobs?limit=50");
        body.replaceChildren(...jobs.map(jobRow));
        refreshAgo();
        if (!jobs.length) {
          const tr = document.createElement("tr");
          tr.className = "empty";
          const td = text("td", "No jobs yet.");
          td.colSpan = 12;
          tr.append(td);
          body.append(tr);
        }
      } catch (e) { /* keep the last table; try again */ }
      setTimeout(tick, 1000);
    };
    setTimeout(tick, 1000);
  }

  // --- charts (uPlot) ---
  const BLUE = "#1d64d8";
  function chartWidth(el) { return Math.max(320, Math.floor(el.getBoundingClientRect().width || 560)); }

  // seconds since the job started, in the unit its length reads best in
  function sinceStart(span) {
    if (span < 180) return (t) => `${Number(t.toPrecision(3))} s`;
    if (span < 3 * 3600) return (t) => `${Number((t / 60).toPrecision(3))} min`;
    return (t) => `${Number((t / 3600).toPrecision(3))} h`;
  }

  function rateChart(el, data) {
    // x: seconds since the start; a bucket's rate holds over the bucket, which ends at its point,
    // so the step is drawn backwards from each point, from the start (0) on
    const origin = data.at.length ? data.at[0] - data.bucket_seconds : 0;
    const xs = data.at.length ? [0, ...data.at.map((t) => t - origin)] : [];
    const ys = data.at.length ? [data.pairs_per_second[0], ...data.pairs_per_second] : [];
    const label = sinceStart(xs.length ? xs[xs.length - 1] : 0);
    const opts = {
      width: chartWidth(el), height: 220, legend: { show: false },
      scales: { x: { time: false }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
      axes: [
        { stroke: "#6b7280", label: "since the job started", values: (u, ticks) => ticks.map(label) },
        { stroke: "#6b7280", label: "pairs/s", size: 60 },
      ],
      series: [{}, { label: "pairs/s", stroke: BLUE, width: 2, fill: "rgba(29,100,216,0.12)", paths: uPlot.paths.stepped({ align: -1 }), points: { show: false } }],
    };
    if (el._chart) { el._chart.setData([xs, ys]); return el._chart; }
    el._chart = new uPlot(opts, [xs, ys], el);
    return el._chart;
  }

  function histogram(el, data) {
    const centers = data.counts.map((_, i) => (data.edges[i] + data.edges[i + 1]) / 2);
    const opts = {
      width: chartWidth(el), height: 260, legend: { show: false },
      scales: { x: { time: false, range: [data.edges[0], data.edges[data.edges.length - 1]] }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
      axes: [
        { stroke: "#6b7280", label: "score change (new − old)", values: (u, vals) => vals.map((v) => (v > 0 ? "+" : "") + Number(v.toPrecision(3))) },
        { stroke: "#6b7280", label: "pairs", size: 60 },
      ],
      series: [{}, { label: "pairs", stroke: BLUE, fill: "rgba(29,100,216,0.55)", width: 1, paths: uPlot.paths.bars({ size: [0.92, Infinity], align: 0 }), points: { show: false } }],
    };
    el._chart = new uPlot(opts, [centers, data.counts], el);
    return el._chart;
  }

  function jobPage(section) {
    const id = section.dataset.job;
    const chartEl = $("#rate-chart");
    const drawRate = async () => {
      try {
        const data = await getJSON(`/v1/jobs/${id}/throughput`);
        if (data.at.length) rateChart(chartEl, data);
        else if (!chartEl._chart) {
          $("#rate-note").textContent = terminal($("#state").textContent)
            ? "No chunk was scored (every pair reused, or none finished): nothing to chart."
            : "No chunk has finished yet: nothing to chart.";
        }
      } catch (e) { $("#rate-note").textContent = e.message; }
    };
    const tick = async () => {
      try {
        const j = await getJSON(`/v1/jobs/${id}`);
        $("#state").textContent = j.state;
        $("#state").className = `state state-${j.state}`;
        $("#waiting-row").hidden = !j.waiting;
        if (j.waiting) setMessage($("#waiting"), j.waiting);
        section.querySelector(".bar").replaceWith(bar(j));
        $("#done").textContent = `${fmt(done(j))} / ${fmt(j.pairs_total)}`;
        $("#scored").textContent = fmt(j.pairs_scored);
        $("#reused").textContent = fmt(j.pairs_reused || 0);
        $("#failed").textContent = fmt(j.pairs_failed);
        $("#rate").textContent = j.pairs_per_second ? `${j.pairs_per_second.toFixed(1)} pairs/s` : "–";
        $("#eta").textContent = eta(j);
        setWhen($("#started"), j.started_at);
        setWhen($("#finished"), j.finished_at);
        refreshAgo();  // created (server-rendered) and started from the same `now`
        for (const [k, v] of Object.entries(j.chunks)) {
          const c = document.querySelector(`[data-chunk-state="${k}"]`);
          if (c) c.textContent = v;
        }
        const holders = $("#holders");
        holders.tBodies[0].replaceChildren(...j.holders.map((h) => {
          const tr = document.createElement("tr");
          tr.append(text("td", h.chunk), text("td", h.worker_id || ""), text("td", h.alive ? "yes" : "no"), cell(when(h.last_seen)));
          return tr;
        }));
        holders.hidden = !j.holders.length;
        $("#no-holders").hidden = j.holders.length > 0;
        const errors = $("#errors");
        errors.replaceChildren(...(j.errors.length ? j.errors.map((e) => { const li = document.createElement("li"); li.append(text("code", e)); return li; }) : [text("li", "none", "muted")]));
        $("#cancel").disabled = terminal(j.state);
        await drawRate();
        if (terminal(j.state)) return;
      } catch (e) { /* try again */ }
      setTimeout(tick, 2000);
    };
    drawRate().then(() => { if (!terminal($("#state").textContent)) setTimeout(tick, 1000); });
    $("#cancel").addEventListener("click", async () => {
      if (!confirm("Cancel this job? Scores already written stay.")) return;
      await getJSON(`/v1/jobs/${id}/cancel`, { method: "POST" }).catch((e) => alert(e.message));
      tick();
    });
    const search = async (qid) => {
      const table = $("#query-results");
      const msg = $("#query-message");
      try {
        const rows = await getJSON(`/v1/jobs/${id}/queries/${encodeURIComponent(qid)}`);
        table.tBodies[0].replaceChildren(...rows.map((r) => {
          const tr = document.createElement("tr");
          tr.append(text("td", r.rank ?? "–"), text("td", r.doc_id), text("td", r.score === null ? "–" : r.score.toFixed(6), "num"), text("td", r.error || ""));
          return tr;
        }));
        table.hidden = !rows.length;
        msg.textContent = rows.length ? `${rows.length} documents scored for query ${qid}` : `no scores for query ${qid} (yet)`;
      } catch (e) { msg.textContent = e.message; table.hidden = true; }
    };
    $("#query-form").addEventListener("submit", (ev) => { ev.preventDefault(); search($("#query-id").value); });
    const asked = new URLSearchParams(location.search).get("query_id");
    if (asked) { $("#query-id").value = asked; search(asked); }
  }

  // --- workers ---
  function workerRow(w) {
    const tr = document.createElement("tr");
    tr.dataset.worker = w.worker_id;
    const memory = w.engine && w.engine.gpu_memory_bytes;
    tr.append(
      cell(text("code", w.worker_id)),
      cell(text("code", (w.fingerprint || "–").slice(0, 12))),
      text("td", w.state, `state wstate-${w.state}`),
      text("td", w.holding.length ? w.holding.join(", ") : "–", "holding"),
      text("td", fmt(w.pairs_scored), "num"),
      text("td", w.pairs_per_second ? w.pairs_per_second.toFixed(1) : "–", "num rate"),
      text("td", memory ? `${(memory / 2 ** 30).toFixed(1)} GiB` : "–", "num memory"),
      cell(when(w.started_at)),
      text("td", "", "seen"),
    );
    tr.lastChild.append(when(w.last_seen));
    if (w.error) tr.querySelector(".state").title = w.error;  // why its engine did not load
    return tr;
  }

  // workers by model (as the server renders them): a header row per model, live workers first within it
  function groupedRows(workers) {
    const models = [...new Set(workers.map((w) => w.model))].sort();
    return models.flatMap((model) => {
      const group = workers.filter((w) => w.model === model);
      const head = document.createElement("tr");
      head.className = "group";
      head.dataset.model = model;
      const th = text("th", `${model} · ${group.filter((w) => w.alive).length} alive`);
      th.colSpan = 9;
      head.append(th);
      return [head, ...group.map(workerRow)];
    });
  }

  function pollWorkers(table, summary) {
    const body = table.tBodies[0];
    const tick = async () => {
      try {
        const [workers, words] = await Promise.all([getJSON("/v1/workers"), getJSON("/v1/workers/summary")]);
        body.replaceChildren(...groupedRows(workers));
        refreshAgo();
        if (!workers.length) {
          const tr = document.createElement("tr");
          tr.className = "empty";
          const td = text("td", "No worker seen in the last day.");
          td.colSpan = 9;
          tr.append(td);
          body.append(tr);
        }
        setMessage(summary, words.summary);
        summary.classList.toggle("error", !words.alive);
      } catch (e) { /* keep the last table */ }
      setTimeout(tick, 2000);
    };
    setTimeout(tick, 2000);
  }

  // --- night to night ---
  function nightsPage() {
    const data = $("#changes-data");
    if (data) histogram($("#changes-chart"), JSON.parse(data.textContent));
  }

  // --- try it ---
  function tryIt(form) {
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const documents = $("#documents").value.split("\n").map((s) => s.trim()).filter((s) => s);
      const body = { query: $("#query").value, documents };
      if ($("#instruction").value.trim()) body.instruction = $("#instruction").value.trim();
      const msg = $("#try-message");
      const table = $("#try-results");
      msg.textContent = "Ranking…";
      msg.className = "muted";
      $("#rank").disabled = true;
      const t0 = performance.now();
      // a request waits for a free chunk slot: after 2 s, say what the workers are doing meanwhile
      const waiting = setInterval(async () => {
        const words = await getJSON("/v1/workers/summary").catch(() => null);
        const seconds = Math.round((performance.now() - t0) / 1000);
        if (words && $("#rank").disabled) msg.textContent = `Ranking… ${seconds} s, waiting for a worker (${words.summary})`;
      }, 2000);
      try {
        const r = await getJSON("/v1/rerank", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
        table.tBodies[0].replaceChildren(...r.results.map((item, i) => {
          const tr = document.createElement("tr");
          tr.append(text("td", i + 1), text("td", item.relevance_score.toFixed(6), "score"), text("td", item.document.text));
          return tr;
        }));
        table.hidden = false;
        msg.textContent = `${r.results.length} documents ranked in ${Math.round(performance.now() - t0)} ms (${r.usage.total_tokens} tokens)`;
      } catch (e) { setMessage(msg, e.message); msg.className = "error"; table.hidden = true; }
      clearInterval(waiting);
      $("#rank").disabled = false;
    });
  }

  return { pollJobs, jobPage, pollWorkers, nightsPage, tryIt, when, absolute, relative };
})();
