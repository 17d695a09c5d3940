"""What a batch job is asked to do (`JobSpec`), and the checks that refuse it before it runs.

`mtc submit` builds a `JobSpec`, runs `preflight` on the submitting machine (a missing file, an
unknown format or task, a field the records lack: refused there, with a message that names it),
and passes the spec to the driver on the cluster as command-line options of `mtc batch run`, so
`ray job submit -- mtc batch run ...` is the same job. The driver runs `preflight` again where
the input is actually read (a path valid on the laptop may not be on the head node).
"""
from __future__ import annotations

from enum import Enum
from pathlib import PurePosixPath
from typing import Annotated, Any, Iterable

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_APP_NAME = "mtc"
DEFAULT_TEXT_FIELD = "text"
DEFAULT_PRIORITY = "batch"


class JobSpecError(ValueError):
    """A job that cannot run as asked; the message names the input, field or task and what to do."""


class InputFormat(str, Enum):
    csv = "csv"
    jsonl = "jsonl"
    parquet = "parquet"


class OutputFormat(str, Enum):
    jsonl = "jsonl"
    parquet = "parquet"


_INPUT_SUFFIXES = {".csv": InputFormat.csv, ".jsonl": InputFormat.jsonl, ".json": InputFormat.jsonl,
                   ".ndjson": InputFormat.jsonl, ".parquet": InputFormat.parquet, ".pq": InputFormat.parquet}
_OUTPUT_SUFFIXES = {".jsonl": OutputFormat.jsonl, ".parquet": OutputFormat.parquet}


def _suffix(uri: str) -> str:
    return PurePosixPath(uri.split("?", 1)[0]).suffix.lower()


def _format(uri: str, formats: dict, what: str, hint: str) -> Any:
    fmt = formats.get(_suffix(uri))
    if fmt is None:
        raise JobSpecError(f"{what} {uri!r}: unknown format {_suffix(uri) or '(no suffix)'}; {hint}")
    return fmt


class JobSpec(BaseModel):
    """One batch job. Paths are local paths or any URI fsspec opens (s3://, gs://, file://)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: str
    output: str
    tasks: tuple[str, ...] | None = None  # None: every task of the served bundle
    text_field: str = DEFAULT_TEXT_FIELD
    id_field: str | None = None  # None: the record's line (row) number is its id
    priority: str = DEFAULT_PRIORITY
    app_name: str = DEFAULT_APP_NAME
    bundle: str | None = None  # standalone: the bundle to run; else taken from the running app
    resume: bool = False
    standalone: bool = False
    # Records per scheduler call: one handle round trip carries this many texts (the per-call
    # overhead, not the model, bounds a 2-core box), admitted all or nothing like an HTTP request.
    chunk_records: Annotated[int, Field(gt=0, le=64)] = 16
    max_inflight_records: Annotated[int, Field(gt=0, le=100_000)] = 512
    part_records: Annotated[int, Field(gt=0)] = 500  # records per committed part file
    standalone_actors: Annotated[int, Field(gt=0)] = 1  # standalone: Ray Data actor pool size
    # Pause when a more urgent caller misses (cluster/jobs/flow.py). Off by default: in an A/B at
    # 40 interactive req/s it did not raise their attainment (bench/reports/batch-job.md).
    yield_to_urgent: bool = False
    progress_every_s: Annotated[float, Field(gt=0)] = 2.0
    # Generative tasks (cluster/jobs/generation.py): the answer's length, and what the templates take.
    max_new_tokens: Annotated[int, Field(gt=0, le=1024)] = 64
    target_language: str | None = None  # translate: required
    source_language: str | None = None  # translate: optional
    language: str | None = None  # code: optional

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is not None and not v:
            raise ValueError("--tasks is empty; name one or more tasks, or omit it for all")
        return None if v is None else tuple(dict.fromkeys(v))

    @property
    def input_format(self) -> InputFormat:
        return _format(self.input, _INPUT_SUFFIXES, "input", f"name a file ending in one of {sorted(_INPUT_SUFFIXES)}")

    @property
    def output_format(self) -> OutputFormat:
        return _format(self.output, _OUTPUT_SUFFIXES, "--out", "end it in .jsonl or .parquet")

    @property
    def errors_output(self) -> str:
        """Rows that could not be run (file, line, reason), beside the output."""
        return f"{self.output}.errors.jsonl"

    @property
    def parts_dir(self) -> str:
        """Where committed parts and the record of done ids live until the output is assembled."""
        return f"{self.output}.parts"

    def cli_args(self) -> list[str]:
        """This spec as `mtc batch run` arguments (what `mtc submit` puts in the job's entrypoint)."""
        args = [self.input, "--out", self.output, "--text-field", self.text_field,
                "--priority", self.priority, "--app", self.app_name,
                "--chunk-records", str(self.chunk_records),
                "--max-inflight", str(self.max_inflight_records),
                "--part-records", str(self.part_records)]
        if self.tasks:
            args += ["--tasks", ",".join(self.tasks)]
        if self.id_field:
            args += ["--id-field", self.id_field]
        if self.bundle:
            args += ["--bundle", self.bundle]
        if self.resume:
            args.append("--resume")
        if self.yield_to_urgent:
            args.append("--yield-to-urgent")
        if self.standalone:
            args += ["--standalone", "--actors", str(self.standalone_actors)]
        args += ["--max-new-tokens", str(self.max_new_tokens)]
        for option, value in (("--target-language", self.target_language),
                              ("--source-language", self.source_language), ("--language", self.language)):
            if value:
                args += [option, value]
        return args


def check_tasks(spec: JobSpec, known: Iterable[str], generative: Iterable[str] = ()) -> list[str]:
    """The tasks the job runs, in order (default: every bundle task); an unknown one is refused,
    naming the known ones. `generative`: the generator's template tasks, where the job may use them."""
    known, generative = list(known), [t for t in generative if t not in known]
    if spec.tasks is None:
        return known
    unknown = [t for t in spec.tasks if t not in known and t not in generative]
    if unknown:
        also = f", and the generative ones {generative}" if generative else ""
        raise JobSpecError(f"unknown task(s) {unknown}; the bundle's tasks are {known}{also}")
    return list(spec.tasks)


def check_priority(spec: JobSpec, classes: Iterable[str]) -> None:
    classes = list(classes)
    if spec.priority not in classes:
        raise JobSpecError(f"unknown priority {spec.priority!r}; use one of {classes}")


def check_fields(spec: JobSpec, fields: Iterable[str], where: str) -> None:
    """The text field (and the id field, when named) must be among the input's fields."""
    fields = list(fields)
    for option, name in (("--text-field", spec.text_field), ("--id-field", spec.id_field)):
        if name is not None and name not in fields:
            raise JobSpecError(f"{where}: no field {name!r} ({option}); its fields are {fields}")


def parse_tasks(value: str | None) -> tuple[str, ...] | None:
    """`--tasks a,b` as a tuple; None when not given."""
    if value is None:
        return None
    return tuple(t.strip() for t in value.split(",") if t.strip())


def spec_from(**values: Any) -> JobSpec:
    """A `JobSpec`, with pydantic's errors turned into one `JobSpecError` naming the field."""
    from pydantic import ValidationError  # noqa: PLC0415

    try:
        return JobSpec(**values)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "job"
        raise JobSpecError(f"{where}: {first['msg']}") from None
