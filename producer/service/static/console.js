// rerankq console: polls the JSON API and fills the server-rendered tables. No framework.
"use strict";
const rerankq = (() => {
  const fmt = (n) => Number(n).toLocaleString("en-US");
  const text = (tag, value, cls) => {
    const el = document.createElement(tag);
    el.textContent = value;
    if (cls) el.className = cls;
    return el;
  };
  const terminal = (s) => !["queued", "running"].includes(s);
  const eta = (j) => {
    const left = j.pairs_total - j.pairs_scored - j.pairs_failed;
    return !terminal(j.state) && j.pairs_per_second && left > 0 ? `${Math.round(left / j.pairs_per_second)} s` : "–";
  };
  async function getJSON(url, options) {
    const r = await fetch(url, Object.assign({ credentials: "same-origin" }, options || {}));
    const body = await r.json().catch(() => ({ detail: `HTTP ${r.status}` }));
    if (!r.ok) throw new Error(body.detail || `HTTP ${r.status}`);
    return body;
  }

  function jobRow(j) {
    const tr = document.createElement("tr");
    tr.dataset.job = j.job_id;
    const link = document.createElement("a");
    link.href = `/jobs/${j.job_id}`;
    link.textContent = j.job_id.slice(0, 8);
    const first = document.createElement("td");
    first.append(link);
    const bar = document.createElement("progress");
    bar.max = j.pairs_total;
    bar.value = j.pairs_scored + j.pairs_failed;
    const barCell = document.createElement("td");
    barCell.append(bar);
    tr.append(
      first,
      text("td", j.name || ""),
      text("td", j.state, `state state-${j.state}`),
      barCell,
      text("td", `${fmt(j.pairs_scored)} / ${fmt(j.pairs_total)}`, "scored"),
      text("td", fmt(j.pairs_failed)),
      text("td", j.pairs_per_second ? j.pairs_per_second.toFixed(1) : "–"),
      text("td", eta(j)),
      text("td", j.created_at.slice(0, 19).replace("T", " ")),
    );
    return tr;
  }

  function pollJobs(table) {
    const body = table.tBodies[0];
    const tick = async () => {
      try {
        const jobs = await getJSON("/v1/jobs?limit=50");
        body.replaceChildren(...jobs.map(jobRow));
        if (!jobs.length) {
          const tr = document.createElement("tr");
          tr.className = "empty";
          const td = text("td", "No jobs yet.");
          td.colSpan = 9;
          tr.append(td);
          body.append(tr);
        }
      } catch (e) { /* keep the last table; try again */ }
      setTimeout(tick, 1000);
    };
    setTimeout(tick, 1000);
  }

  function jobPage(section) {
    const id = section.dataset.job;
    const $ = (sel) => document.querySelector(sel);
    const tick = async () => {
      try {
        const j = await getJSON(`/v1/jobs/${id}`);
        $("#state").textContent = j.state;
        $("#state").className = `state state-${j.state}`;
        $("#bar").max = j.pairs_total;
        $("#bar").value = j.pairs_scored + j.pairs_failed;
        $("#scored").textContent = `${fmt(j.pairs_scored)} / ${fmt(j.pairs_total)}`;
        $("#failed").textContent = fmt(j.pairs_failed);
        $("#rate").textContent = j.pairs_per_second ? `${j.pairs_per_second.toFixed(1)} pairs/s` : "–";
        $("#eta").textContent = eta(j);
        $("#started").textContent = j.started_at || "";
        $("#finished").textContent = j.finished_at || "";
        for (const [k, v] of Object.entries(j.chunks)) {
          const cell = document.querySelector(`[data-chunk-state="${k}"]`);
          if (cell) cell.textContent = v;
        }
        const holders = $("#holders").tBodies[0];
        holders.replaceChildren(...j.holders.map((h) => {
          const tr = document.createElement("tr");
          tr.append(text("td", h.chunk), text("td", h.worker_id || ""), text("td", h.alive ? "yes" : "no"), text("td", h.last_seen || ""));
          return tr;
        }));
        const errors = $("#errors");
        errors.replaceChildren(...(j.errors.length ? j.errors.map((e) => { const li = document.createElement("li"); li.append(text("code", e)); return li; }) : [text("li", "none", "muted")]));
        $("#cancel").disabled = terminal(j.state);
        if (terminal(j.state)) return;
      } catch (e) { /* try again */ }
      setTimeout(tick, 1000);
    };
    setTimeout(tick, 1000);
    $("#cancel").addEventListener("click", async () => {
      if (!confirm("Cancel this job? Scores already written stay.")) return;
      await getJSON(`/v1/jobs/${id}/cancel`, { method: "POST" }).catch((e) => alert(e.message));
      tick();
    });
    $("#query-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const qid = $("#query-id").value;
      const table = $("#query-results");
      const msg = $("#query-message");
      try {
        const rows = await getJSON(`/v1/jobs/${id}/queries/${encodeURIComponent(qid)}`);
        table.tBodies[0].replaceChildren(...rows.map((r) => {
          const tr = document.createElement("tr");
          tr.append(text("td", r.rank ?? "–"), text("td", r.doc_id), text("td", r.score === null ? "–" : r.score.toFixed(6)), text("td", r.error || ""));
          return tr;
        }));
        table.hidden = !rows.length;
        msg.textContent = rows.length ? `${rows.length} documents scored for query ${qid}` : `no scores for query ${qid} (yet)`;
      } catch (e) { msg.textContent = e.message; table.hidden = true; }
    });
  }

  function tryIt(form) {
    const $ = (sel) => document.querySelector(sel);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const documents = $("#documents").value.split("\n").map((s) => s.trim()).filter((s) => s);
      const body = { query: $("#query").value, documents };
      if ($("#instruction").value.trim()) body.instruction = $("#instruction").value.trim();
      const msg = $("#try-message");
      const table = $("#try-results");
      msg.textContent = "Ranking…";
      $("#rank").disabled = true;
      const t0 = performance.now();
      try {
        const r = await getJSON("/v1/rerank", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
        table.tBodies[0].replaceChildren(...r.results.map((item, i) => {
          const tr = document.createElement("tr");
          tr.append(text("td", i + 1), text("td", item.relevance_score.toFixed(6), "score"), text("td", item.document.text));
          return tr;
        }));
        table.hidden = false;
        msg.textContent = `${r.results.length} documents ranked in ${Math.round(performance.now() - t0)} ms (${r.usage.total_tokens} tokens)`;
      } catch (e) { msg.textContent = e.message; table.hidden = true; }
      $("#rank").disabled = false;
    });
  }

  return { pollJobs, jobPage, tryIt };
})();
