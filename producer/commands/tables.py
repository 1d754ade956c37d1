"""The tables `producer status` and `producer list` print: readable at 80 columns, words never cut
across lines (a value wraps at its spaces, or is cut with an ellipsis), job ids always whole."""

from __future__ import annotations

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from producer.commands.common import ago, utc, visible
from schemas import JobStatus

GAP = 2  # between columns: one padding space and the box's separator


def pairs_done(j: JobStatus) -> str:
    """``2,001 / 2,001 (1,794 reused)``: reused pairs count as done, as they are."""
    done = j.pairs_scored + j.pairs_failed + j.pairs_reused
    return f"{done:,} / {j.pairs_total:,}" + (f" ({j.pairs_reused:,} reused)" if j.pairs_reused else "")


def state_label(j: JobStatus, long: bool = False) -> str:
    """The job's state, and whether its manifest is still being recorded (``submitting``) or never was whole
    (refused for a bad row found late, cancelled or stopped while submitting: nothing is exported from it)."""
    if not j.submitting:
        return j.state.value
    if j.state.terminal:
        return f"{j.state.value}, never fully submitted" if long else f"{j.state.value} (partial)"
    return f"{j.state.value}, submitting: {j.pairs_total:,} pairs recorded so far" if long else "submitting"


def jobs_table(jobs: list[JobStatus], width: int) -> Table:
    """One row per job. Where the five columns do not fit in ``width``, each job's name and creation
    time go on a second line under its id (a long name wraps at its spaces), and its pairs wrap at theirs."""
    names = [visible(j.name or "", lines=False) for j in jobs]  # a user's: shown inert, on one line
    rows = [(j.job_id, state_label(j), pairs_done(j), utc(j.created_at)[:16], name) for j, name in zip(jobs, names)]
    heads = ("job", "state", "pairs", "created (UTC)", "name")
    natural = [max(len(cell) for cell in column) for column in zip(heads, *rows)]
    options = {"box": box.SIMPLE_HEAD, "show_edge": False, "pad_edge": False, "padding": (0, 1, 0, 0)}
    if sum(natural) + GAP * (len(heads) - 1) <= width:
        table = Table(*heads, **options)
        for column in table.columns:
            column.no_wrap = True
        for row in rows:
            table.add_row(*row)
        return table
    id_width = max(natural[0], 3)
    table = Table("job / created (UTC), name", "state", "pairs", **options)
    table.columns[0].width = id_width  # ids whole: they are copied into other commands
    table.columns[0].overflow = "ellipsis"  # a name longer than an id is cut, never folded
    table.columns[1].no_wrap = True
    for job_id, state, pairs, created, name in rows:
        second = Text("  ".join(x for x in (created, name) if x), style="dim", overflow="ellipsis")
        table.add_row(Group(Text(job_id, no_wrap=True), second), state, pairs)
    return table


def status_table(st: JobStatus, waiting: str | None = None) -> Table:
    """`producer status`: one row per fact, the waiting note while the job is not finished."""
    table = Table(show_header=False, box=None)
    rows: list[tuple[str, RenderableType]] = [
        ("job", st.job_id),
        ("name", visible(st.name or "", lines=False)),  # a user's: shown inert, on one line
        ("state", state_label(st, long=True)),
        ("pairs", f"{st.pairs_scored:,} scored, {st.pairs_reused:,} reused, {st.pairs_failed:,} failed, {st.pairs_total:,} total"),
        ("chunks", _chunks(st)),
        ("created", utc(st.created_at)),
        ("started", utc(st.started_at)),
        ("finished", utc(st.finished_at)),
    ]
    if waiting and not st.state.terminal:
        rows.insert(3, ("waiting", waiting))
    if st.then_model:  # after the state: the model rows read "model, then, state"
        rows.insert(2, ("then", f"{st.then_model}, each query's top {st.then_top} ({_context(st.then_context)})"))
    if st.model:
        rows.insert(2, ("model", f"{st.model} ({_context(st.score_context)})"))
    if st.elapsed_seconds is not None:
        rows.append(("elapsed", f"{st.elapsed_seconds:.1f} s, {st.pairs_per_second or 0:.1f} pairs/s"))
    for h in st.holders:
        seen = f"last seen {ago(h.last_seen)}" if h.last_seen else "never registered"
        rows.append(("held by", f"chunk {h.chunk}: {h.worker_id} ({'alive' if h.alive else 'presumed dead'}, {seen})"))
    rows += [("error", e) for e in st.errors]
    for k, v in rows:
        table.add_row(k, v)
    return table


def _chunks(st: JobStatus) -> str:
    """``done 3, running 1 (of 5)``; a job with no chunk (every pair reused at submission) says so."""
    if not st.chunks_total:
        return "none: every pair came from the score cache" if st.pairs_reused == st.pairs_total else "none"
    return ", ".join(f"{k} {v}" for k, v in st.chunks.model_dump().items() if v) + f" (of {st.chunks_total})"


def _context(digest: str | None) -> str:
    return f"context {digest[:12]}" if digest else "context not pinned yet"
