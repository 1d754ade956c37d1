"""Validate a Parquet manifest in one streaming pass (bounded memory) and plan its chunks.

Policy: a manifest with any bad row is rejected whole, with every problem listed (file, row,
field) up to a limit; nothing is written to SQL and nothing enters the queue. Rows of one query
must be contiguous (as retrieval output is): chunks are cut only between queries, which keeps a
query's documents together on one worker, and duplicate (query_id, doc_id) pairs are found with
memory bounded by the largest query plus the set of query ids.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from producer.chunk_plans import ChunkPacker, text_head
from rerankq.families import PairBuilder
from rerankq.manifest_source import (
    COLUMNS,
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    ManifestError,
    ManifestFile,
    check_allowed,
    list_files,
    normalize_uri,
    open_parquet,
    texts,
)
from rerankq.prompt import head_surely_fits
from rerankq.settings import DEFAULT_INSTRUCTION, Settings
from rerankq.store.records import NewChunk
from schemas import ManifestSegment, ManifestSpec

# A loader of the model's prompt builder, called only for a query too long to pass the byte bound of
# ``head_surely_fits`` (its family's, when it has ``surely_fits``: rerankq/families.BuilderSource); None: no
# model files here, queries are checked by the workers.
BuilderSource = Callable[[], PairBuilder] | None
BATCH_ROWS = 16_384
MAX_REPORTED = 50
_TEXT_TYPES = (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary)


@dataclass
class Problems:
    """Every bad row is counted; the first MAX_REPORTED in manifest order (file, then row) are described,
    whichever check found them first: a batch's column checks run before its query checks."""

    count: int = 0
    _kept: list = field(default_factory=list)  # a max-heap of the earliest: ((-file, -row, -n), message)
    _files: dict[str, int] = field(default_factory=dict)

    def add(self, path: str, row: int | None, column: str | None, text: str) -> None:
        self.count += 1
        where = path + (f" row {row}" if row is not None else "") + (f" field {column!r}" if column else "")
        item = ((-self._files.setdefault(path, len(self._files)), 1 if row is None else -row, -self.count), f"{where}: {text}")
        if len(self._kept) < MAX_REPORTED:
            heapq.heappush(self._kept, item)
        elif item[0] > self._kept[0][0]:
            heapq.heapreplace(self._kept, item)

    @property
    def messages(self) -> list[str]:
        return [message for _, message in sorted(self._kept, reverse=True)]

    def raise_if_any(self, uri: str, rejected: str = "nothing was submitted") -> None:
        if self.count:
            raise ManifestError(self.report(uri, rejected))

    def report(self, uri: str, rejected: str = "nothing was submitted") -> str:
        more = f"\n  … and {self.count - len(self.messages)} more" if self.count > len(self.messages) else ""
        return f"manifest {uri} rejected, {rejected}: {self.count} problem(s)\n  " + "\n  ".join(self.messages) + more


@dataclass
class ManifestPlan:
    uri: str
    pairs: int
    queries: int
    chunks: list[NewChunk]
    files: list[tuple[ManifestFile, int]] = field(default_factory=list)  # each file and its row count


class ChunkPlanner:
    """Each query's rows (contiguous runs, never split) and their text heads, packed into chunks of
    about ``chunk_size`` pairs, a repeated query text with its first chunk (producer/chunk_plans.py)."""

    def __init__(self, chunk_size: int):
        self.packer: ChunkPacker[list[list[int]]] = ChunkPacker(chunk_size)
        self._group: list[list[int]] = []
        self._group_pairs = 0
        self._heads: set[bytes] = set()

    @staticmethod
    def _extend(segments: list[list[int]], file_index: int, start: int, stop: int) -> None:
        if segments and segments[-1][0] == file_index and segments[-1][2] == start:
            segments[-1][2] = stop
        else:
            segments.append([file_index, start, stop])

    def rows(self, file_index: int, start: int, stop: int, heads: Iterable[bytes] = ()) -> None:
        """Rows [start, stop) of a file belong to the current query; ``heads``: their texts' heads."""
        self._extend(self._group, file_index, start, stop)
        self._group_pairs += stop - start
        self._heads.update(heads)

    def end_query(self) -> None:
        if self._group_pairs:
            self.packer.add(self._group, self._group_pairs, self._heads)
        self._group, self._group_pairs, self._heads = [], 0, set()

    def finish(self) -> list[tuple[list[list[int]], int]]:
        """Each chunk's segments ([file, start, stop], in file order) and its number of pairs."""
        self.end_query()
        out = []
        for runs, pairs in self.packer.chunks():
            segments: list[list[int]] = []
            for segment in sorted(s for run in runs for s in run):
                self._extend(segments, *segment)
            out.append((segments, pairs))
        return out


class _QueryTracker:
    """Contiguity of query runs and uniqueness of doc ids within each run."""

    def __init__(self, planner: ChunkPlanner, problems: Problems, builder: BuilderSource, max_length: int):
        self.planner, self.problems, self.builder, self.max_length = planner, problems, builder, max_length
        self.done: set[str] = set()
        self.current: str | None = None
        self.docs: set[str] = set()
        self.queries = 0
        self._checked: tuple[str | None, str] | None = None

    def check_query_fits(self, path: str, row: int, instruction: str | None, query: str) -> None:
        if self.builder is None or self._checked == (instruction, query):
            return
        self._checked = (instruction, query)
        resolved = DEFAULT_INSTRUCTION if instruction is None else instruction
        fits = getattr(self.builder, "surely_fits", None)  # the model's family's bound (rerankq/families)
        if fits(resolved, query) if fits else head_surely_fits(resolved, query, self.max_length):
            return  # the usual case: no tokenizer loaded at all
        builder = self.builder()
        n = builder.head_tokens(instruction, query)
        if n >= builder.body_budget:
            self.problems.add(
                path, row, "query",
                f"instruction and query take {n} tokens; max_length {builder.max_length} leaves "
                f"{builder.body_budget} for them and the document",
            )  # fmt: skip

    def feed(self, path: str, file_index: int, first_row: int, qids: list, dids: list, heads: list[bytes]) -> None:
        run_start = 0
        for i, (qid, did) in enumerate(zip(qids, dids)):
            if not qid:  # null or empty: reported as such, and no query of its own (nor a break in one)
                continue
            if qid != self.current:
                if i > run_start:
                    self.planner.rows(file_index, first_row + run_start, first_row + i, heads[run_start:i])
                run_start = i
                self._new_query(path, first_row + i, qid)
            if did is not None and qid is not None:
                if did in self.docs:
                    self.problems.add(path, first_row + i, "doc_id", f"duplicate pair (query_id={qid!r}, doc_id={did!r})")
                self.docs.add(did)
        if len(qids) > run_start:
            self.planner.rows(file_index, first_row + run_start, first_row + len(qids), heads[run_start:])

    def _new_query(self, path: str, row: int, qid: str | None) -> None:
        if self.current is not None:
            self.done.add(self.current)
        self.planner.end_query()
        self.current, self.docs = qid, set()
        if qid is None:
            return
        self.queries += 1
        if qid in self.done:
            self.problems.add(
                path, row, "query_id",
                f"query_id {qid!r} appears again after other queries: rows of one query must be contiguous "
                "(sort the manifest by query_id)",
            )  # fmt: skip


def _check_schema(path: str, schema: pa.Schema, problems: Problems) -> list[str]:
    names = set(schema.names)
    for column in REQUIRED_COLUMNS:
        if column not in names:
            problems.add(path, None, column, f"required column is missing (columns present: {sorted(names)})")
    for column in COLUMNS:
        if column in names and not any(t(schema.field(column).type) for t in _TEXT_TYPES):
            problems.add(path, None, column, f"must be a string column, found {schema.field(column).type}")
    return [c for c in COLUMNS if c in names]


def _bad_rows(mask: pa.Array) -> list[int]:
    return pc.indices_nonzero(pc.fill_null(mask, False)).to_pylist()


def _check_batch(path: str, first_row: int, batch: pa.RecordBatch, settings: Settings, problems: Problems) -> dict:
    """Vectorized checks of one batch; returns its columns decoded as Python strings."""
    values: dict[str, list] = {}
    limits = {"document": settings.max_document_chars, "query": settings.max_query_chars}
    for column in batch.schema.names:
        array = batch.column(column)
        required = column not in OPTIONAL_COLUMNS
        if required:
            for i in _bad_rows(pc.is_null(array)):
                problems.add(path, first_row + i, column, "is null")
            for i in _bad_rows(pc.equal(pc.binary_length(array), 0)):
                problems.add(path, first_row + i, column, "is an empty string")
        if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
            try:  # a string column may still hold invalid UTF-8 (written unchecked): check it as bytes
                array.validate(full=True)
            except pa.ArrowInvalid:
                array = array.view(pa.large_binary() if pa.types.is_large_string(array.type) else pa.binary())
        decoded = texts(array)
        if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
            raw = array.to_pylist()
            for i, (v, d) in enumerate(zip(raw, decoded)):
                if v is not None and d is None:
                    problems.add(path, first_row + i, column, "is not valid UTF-8")
        if column in limits:
            lengths = pc.utf8_length(pa.array(decoded, pa.string()))
            for i in _bad_rows(pc.greater(lengths, limits[column])):
                problems.add(
                    path, first_row + i, column,
                    f"has {len(decoded[i]):,} characters, over the limit of {limits[column]:,} "
                    f"(RERANKQ_MAX_{column.upper()}_CHARS)",
                )  # fmt: skip
        values[column] = decoded
    return values


def _text_heads(instructions: list, queries: list) -> list[bytes]:
    """Each row's (instruction, query) head (producer/chunk_plans.py), hashed once per run of equal texts."""
    out: list[bytes] = []
    last: tuple | None = None
    head = b""
    for pair in zip(instructions, queries):
        if pair != last:
            head, last = text_head(*pair), pair
        out.append(head)
    return out


@dataclass(frozen=True, slots=True)
class CheckedBatch:
    """One checked batch of a manifest file: rows ``first_row`` … of file ``file_index`` (``file_rows`` in
    all), its columns decoded, each row's resolved instruction and (instruction, query) text head."""

    file_index: int
    file: ManifestFile
    file_rows: int
    first_row: int
    values: dict[str, list]
    instructions: list
    heads: list[bytes]


class _NoPlan:
    """The planner of a pass whose caller plans chunks itself (producer/streaming.py)."""

    def rows(self, file_index: int, start: int, stop: int, heads: Iterable[bytes] = ()) -> None:
        pass

    def end_query(self) -> None:
        pass


class CheckedManifest:
    """One streaming pass over a manifest: ``batches()`` yields each batch's decoded columns, checked,
    in manifest order, while no problem has been found (the caller stages score-cache keys from them:
    producer/submission.py), and goes on checking the rest without yielding once one has, so that
    ``plan()`` lists every problem (ManifestError) or returns the plan. ``stream()`` is the same pass
    for a caller that records as it reads (``plan=False``: it plans the chunks itself)."""

    def __init__(
        self,
        uri: str,
        settings: Settings,
        *,
        chunk_size: int | None = None,
        instruction: str | None = None,
        builder: BuilderSource = None,
        plan: bool = True,
    ):
        self.uri = normalize_uri(uri)
        check_allowed(self.uri, settings)
        self.settings, self.instruction, self.builder = settings, instruction, builder
        self.problems = Problems()
        self.planner = ChunkPlanner(chunk_size or settings.chunk_size)
        planner = self.planner if plan else _NoPlan()
        self.tracker = _QueryTracker(planner, self.problems, builder, settings.max_length)  # type: ignore[arg-type]
        self.total = 0
        self.sizes: list[tuple[ManifestFile, int]] = []
        self._read = False

    def batches(self) -> Iterator[dict[str, list]]:
        return (batch.values for batch in self.stream() if batch is not None)

    def stream(self) -> Iterator[CheckedBatch | None]:
        """Each checked batch while no problem has been found; at the first problem one None (the caller
        stops recording), then the rest checked without yielding; ``raise_problems()`` after it."""
        announced = False
        for batch in self._walk():
            if self.problems.count:
                if not announced:
                    announced = True
                    yield None
            elif batch is not None:
                yield batch

    def _walk(self) -> Iterator[CheckedBatch | None]:
        fs, files = list_files(self.uri, self.settings)
        problems, tracker = self.problems, self.tracker
        for file_index, mf in enumerate(files):
            try:
                pf = open_parquet(fs, mf.path)
            except ManifestError as exc:
                problems.add(mf.path, None, None, str(exc).removeprefix(f"{mf.path}: "))
                self.sizes.append((mf, 0))
                yield None
                continue
            self.sizes.append((mf, pf.metadata.num_rows))
            before = problems.count  # problems of earlier files must not stop this file's checks
            columns = _check_schema(mf.path, pf.schema_arrow, problems)
            if set(REQUIRED_COLUMNS) - set(columns) or problems.count > before:
                yield None
                continue
            row = 0
            batches = pf.iter_batches(batch_size=BATCH_ROWS, columns=columns)
            while True:
                try:
                    batch = next(batches, None)
                except (pa.ArrowException, OSError) as exc:  # a damaged page: corrupt or truncated data
                    problems.add(mf.path, row, None, f"unreadable Parquet data ({str(exc).strip().splitlines()[0][:200]})")
                    break
                if batch is None:
                    break
                values = _check_batch(mf.path, row, batch, self.settings, problems)
                rows = values.get("instruction") or [None] * batch.num_rows
                instr = [r if r is not None else self.instruction for r in rows]
                heads = _text_heads(instr, values["query"])
                tracker.feed(mf.path, file_index, row, values["query_id"], values["doc_id"], heads)
                if self.builder is not None:
                    for i, q in enumerate(values["query"]):
                        if q:
                            tracker.check_query_fits(mf.path, row + i, instr[i], q)
                yield CheckedBatch(file_index, mf, pf.metadata.num_rows, row, values, instr, heads)
                row += batch.num_rows
            self.total += row
        self._read = True

    def plan(self) -> ManifestPlan:
        """The chunks over every row (after ``batches()``, which it runs if not yet run)."""
        if not self._read:
            for _ in self.batches():
                pass
        self.raise_problems()
        chunks = []
        for segments, pairs in self.planner.finish():
            spec = ManifestSpec(uri=self.uri, instruction=self.instruction, segments=self._segments(segments))
            chunks.append(NewChunk(spec=spec.model_dump(mode="json"), pairs=pairs))
        return ManifestPlan(uri=self.uri, pairs=self.total, queries=self.tracker.queries, chunks=chunks, files=self.sizes)


    def raise_problems(self, rejected: str = "nothing was submitted") -> None:
        """ManifestError listing every problem (after the whole pass), ``rejected`` saying what became of the job."""
        if not self.problems.count and self.total == 0:
            self.problems.add(self.uri, None, None, "the manifest has no rows")
        self.problems.raise_if_any(self.uri, rejected)

    def _segments(self, spans: list[list[int]]) -> list[ManifestSegment]:
        """A chunk's rows, one segment per file: a range, or (runs of a repeated query text from
        elsewhere in the file) the rows themselves, so a worker decodes each row group once."""
        by_file: dict[int, list[list[int]]] = {}
        for f, a, b in spans:  # in file order (ChunkPlanner.finish)
            by_file.setdefault(f, []).append([a, b])
        out = []
        for f, ranges in by_file.items():
            mf, file_rows = self.sizes[f]
            rows = [r for a, b in ranges for r in range(a, b)] if len(ranges) > 1 else None
            start, stop = ranges[0][0], ranges[-1][1]
            out.append(ManifestSegment(path=mf.path, start=start, stop=stop, size=mf.size, file_rows=file_rows, rows=rows))
        return out


def plan_manifest(uri: str, settings: Settings, **options: object) -> ManifestPlan:
    """Check a whole manifest and plan its chunks (``CheckedManifest``'s options); ManifestError lists
    every problem found."""
    return CheckedManifest(uri, settings, **options).plan()  # type: ignore[arg-type]
