"""Exactly-once output: part files committed atomically, resumed by the ids they hold.

Design note. A job's results go to `<output>.parts/` in part files (JSONL, each sorted by input
line), each written under a temporary name and renamed into place: a rename is atomic, so a part
either exists whole or not at all, whenever the driver dies. The parts *are* the record of what
is done: `--resume` reads the ids (and the lines of rows refused as bad) of the committed parts
and skips them; what was in flight or buffered when the driver died was never committed and runs
again. `assemble` then merges the parts in input order into the output (and the errors file),
keeping one row per input line, so a record that ran twice (committed, then a transient error
row from an earlier attempt) still appears once, and writes it under a temporary name first too.
`job.json` pins what the parts were computed for: a resume with other tasks or fields is refused.
"""
from __future__ import annotations

import heapq
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

import fsspec

from cluster.jobs.spec import JobSpec, JobSpecError, OutputFormat

MANIFEST = "job.json"
PART_PREFIX = "part-"
PARQUET_ROW_GROUP = 10_000


@dataclass
class Done:
    """What committed parts already hold: ids with a result, lines refused for good."""

    ids: set[str] = field(default_factory=set)
    bad_lines: set[int] = field(default_factory=set)
    parts: int = 0

    def __len__(self) -> int:
        return len(self.ids) + len(self.bad_lines)


def result_row(line: int, rid: Any, results: dict) -> dict:
    return {"line": line, "id": rid, "results": results}


def error_row(line: int, rid: Any, reason: str, *, final: bool = True) -> dict:
    """`final=False`: a transient failure (the model failed it every try): a resume runs it again."""
    return {"line": line, "id": rid, "error": reason, "final": final}


class PartStore:
    def __init__(self, spec: JobSpec):
        self.spec = spec
        self.fs, self.root = fsspec.core.url_to_fs(spec.parts_dir)
        self.out_fs, self.out_path = fsspec.core.url_to_fs(spec.output)
        self.err_path = fsspec.core.url_to_fs(spec.errors_output)[1]
        self.run_id = uuid.uuid4().hex[:8]  # part names of different runs never collide
        self._seq = 0

    def _manifest(self, tasks: list[str]) -> dict:
        s = self.spec
        return {"input": s.input, "tasks": tasks, "text_field": s.text_field, "id_field": s.id_field}

    def _parts(self) -> list[str]:
        if not self.fs.exists(self.root):
            return []
        return sorted(p for p in self.fs.ls(self.root, detail=False)
                      if p.rsplit("/", 1)[-1].startswith(PART_PREFIX) and p.endswith(".jsonl"))

    def finished(self) -> bool:
        """An earlier run assembled the output and removed its parts."""
        return self.out_fs.exists(self.out_path) and not self.fs.exists(self.root)

    def start(self, tasks: list[str]) -> Done:
        """Open the store for this run. Without --resume, an earlier run's parts or output is
        refused (nothing is overwritten silently); with it, the done ids are read back."""
        s = self.spec
        manifest_path = f"{self.root}/{MANIFEST}"
        if not s.resume:
            if self.fs.exists(self.root):
                raise JobSpecError(f"{s.parts_dir} holds an earlier run's parts; pass --resume to continue "
                                   f"it, or delete that directory to start over")
            if self.out_fs.exists(self.out_path):
                raise JobSpecError(f"output {s.output!r} exists; choose another --out or delete it")
        elif self.fs.exists(manifest_path):
            with self.fs.open(manifest_path, "r") as f:
                pinned = json.load(f)
            if pinned != self._manifest(tasks):
                raise JobSpecError(f"--resume: {s.parts_dir} was computed for {pinned}, not "
                                   f"{self._manifest(tasks)}; resume with the same options or delete it")
        self.fs.makedirs(self.root, exist_ok=True)
        self._write_atomic(self.fs, manifest_path, json.dumps(self._manifest(tasks)).encode())
        done = Done()
        for path in self.fs.ls(self.root, detail=False):
            if ".tmp-" in path.rsplit("/", 1)[-1]:  # an interrupted write's leftovers
                self.fs.rm(path)
        for path in self._parts():
            done.parts += 1
            for row in self._read_part(path):
                if "results" in row:
                    done.ids.add(str(row["id"]))
                elif row.get("final", True):
                    done.bad_lines.add(int(row["line"]))
        return done

    def commit(self, rows: list[dict]) -> str | None:
        """Write one part (rows sorted by line) and make it visible in one rename."""
        if not rows:
            return None
        self._seq += 1
        path = f"{self.root}/{PART_PREFIX}{self.run_id}-{self._seq:05d}.jsonl"
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in sorted(rows, key=lambda r: r["line"]))
        self._write_atomic(self.fs, path, body.encode("utf-8", "surrogatepass"))
        return path

    @staticmethod
    def _write_atomic(fs: Any, path: str, data: bytes) -> None:
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with fs.open(tmp, "wb") as f:
            f.write(data)
        fs.mv(tmp, path)

    def _read_part(self, path: str) -> Iterator[dict]:
        with self.fs.open(path, "rb") as f:
            for raw in f:
                yield json.loads(raw)

    def _merged(self) -> Iterator[dict]:
        """All parts' rows in input order, one per line: a result beats an error row of the same line."""
        streams = [(((r["line"], 0 if "results" in r else 1), r) for r in self._read_part(p))
                   for p in self._parts()]
        last = None
        for (line, _), row in heapq.merge(*streams, key=lambda kr: kr[0]):
            if line != last:
                last = line
                yield row

    def assemble(self) -> tuple[int, int]:
        """Merge the parts into the output and the errors file; remove the parts. (results, errors)."""
        results: list[dict] = []
        n_ok = n_err = 0
        tmp_out = f"{self.out_path}.tmp-{self.run_id}"
        tmp_err = f"{self.err_path}.tmp-{self.run_id}"
        writer = _OutputWriter(self.out_fs, tmp_out, self.spec.output_format)
        with writer, self.out_fs.open(tmp_err, "wb") as err_file:
            for row in self._merged():
                if "results" in row:
                    n_ok += 1
                    results.append(row)
                    if len(results) >= PARQUET_ROW_GROUP:
                        writer.write(results)
                        results = []
                else:
                    n_err += 1
                    error = {"file": self.spec.input, "line": row["line"], "id": row["id"],
                             "reason": row["error"]}
                    err_file.write((json.dumps(error, ensure_ascii=False) + "\n").encode("utf-8", "surrogatepass"))
            writer.write(results)
        self.out_fs.mv(tmp_out, self.out_path)
        self.out_fs.mv(tmp_err, self.err_path)
        self.fs.rm(self.root, recursive=True)
        return n_ok, n_err


class _OutputWriter:
    """JSONL lines `{"id", "line", "results"}`, or Parquet columns id (string), line, results (the
    HTTP API's per-task results as JSON text: one schema fits every task's shape)."""

    def __init__(self, fs: Any, path: str, fmt: OutputFormat):
        self.file = fs.open(path, "wb")
        self.fmt = fmt
        self.parquet = None

    def write(self, rows: list[dict]) -> None:
        if self.fmt is OutputFormat.jsonl:
            self.file.write("".join(json.dumps({"id": r["id"], "line": r["line"], "results": r["results"]},
                                               ensure_ascii=False) + "\n" for r in rows)
                            .encode("utf-8", "surrogatepass"))
            return
        import pyarrow as pa  # noqa: PLC0415
        import pyarrow.parquet as pq  # noqa: PLC0415

        schema = pa.schema([("id", pa.string()), ("line", pa.int64()), ("results", pa.string())])
        if self.parquet is None:
            self.parquet = pq.ParquetWriter(self.file, schema)
        table = pa.table({"id": [str(r["id"]) for r in rows], "line": [r["line"] for r in rows],
                          "results": [json.dumps(r["results"], ensure_ascii=False) for r in rows]},
                         schema=schema)
        self.parquet.write_table(table)

    def __enter__(self) -> "_OutputWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.parquet is not None:
            self.parquet.close()
        elif self.fmt is OutputFormat.parquet:  # no results at all: still a valid, empty file
            self.write([])
            self.parquet.close()
        self.file.close()
