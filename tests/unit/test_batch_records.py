"""Batch jobs without Ray: the input reader (formats, line numbers, bad rows), the spec's checks,
the flow window and the progress line."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cluster.jobs.flow import MIN_PAUSE_S, Window, on_done, on_refused
from cluster.jobs.progress import Progress, parse_progress
from cluster.jobs.records import BadRow, Record, check_input, count_rows, read_records
from cluster.jobs.spec import JobSpec, JobSpecError, check_tasks, parse_tasks, spec_from


def no_problem(text):
    return None if text.strip() else "empty"


def spec(tmp_path, name, **kw):
    return JobSpec(input=str(tmp_path / name), output=str(tmp_path / "out.jsonl"), **kw)


def test_jsonl_rows_keep_their_line_and_every_bad_row_says_why(tmp_path):
    lines = [json.dumps({"id": "a", "text": "one"}), "", "{not json", json.dumps([1, 2]),
             json.dumps({"id": "b"}), json.dumps({"id": "c", "text": 7}), json.dumps({"id": "a", "text": "again"}),
             json.dumps({"text": "no id"}), json.dumps({"id": 4.5, "text": "float id"}),
             json.dumps({"id": 5, "text": "   "})]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "in.jsonl").open("ab").write(b'{"id": "d", "text": "caf\xe9"}\n')  # latin-1, not UTF-8
    rows = list(read_records(spec(tmp_path, "in.jsonl", id_field="id"), no_problem))
    assert rows[0] == Record(1, "a", "one")
    bad = {r.line: r.reason for r in rows if isinstance(r, BadRow)}
    assert "not valid JSON" in bad[3] and "not a JSON object" in bad[4]
    assert bad[5] == "no text in field 'text'" and "holds a int, not a string" in bad[6]
    assert bad[7] == "duplicate id 'a', first seen at line 1"
    assert bad[8] == "no id in field 'id'" and "holds a float" in bad[9]
    assert bad[10] == "empty" and "not valid UTF-8" in bad[11]
    assert len(rows) == 10  # the blank line 2 is no record; every other line is exactly one row


def test_csv_line_numbers_follow_quoted_newlines_and_ragged_rows_are_bad(tmp_path):
    (tmp_path / "in.csv").write_text('id,text\n1,plain\n2,"two\nlines"\n3,x,extra\n4,last\n')
    rows = list(read_records(spec(tmp_path, "in.csv", id_field="id"), no_problem))
    assert rows[0] == Record(2, "1", "plain") and rows[1] == Record(3, "2", "two\nlines")
    assert isinstance(rows[2], BadRow) and rows[2].line == 5 and "3 cells where the header has 2" in rows[2].reason
    assert rows[3] == Record(6, "4", "last")
    assert count_rows(spec(tmp_path, "in.csv")) == 4


def test_parquet_rows_are_numbered_and_counted_from_metadata(tmp_path):
    pq.write_table(pa.table({"doc": ["x", "y", None], "other": [1, 2, 3]}), tmp_path / "in.parquet")
    s = spec(tmp_path, "in.parquet", text_field="doc")
    rows = list(read_records(s, no_problem))
    assert rows[:2] == [Record(1, 1, "x"), Record(2, 2, "y")] and isinstance(rows[2], BadRow)
    assert count_rows(s) == 3


def test_preflight_names_the_missing_file_format_and_field(tmp_path):
    with pytest.raises(JobSpecError, match="does not exist"):
        check_input(spec(tmp_path, "nope.jsonl"))
    (tmp_path / "in.txt").write_text("x")
    with pytest.raises(JobSpecError, match=r"unknown format \.txt"):
        check_input(spec(tmp_path, "in.txt"))
    (tmp_path / "in.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(JobSpecError, match=r"no field 'text' \(--text-field\); its fields are \['body'\]"):
        check_input(spec(tmp_path, "in.jsonl"))
    with pytest.raises(JobSpecError, match=r"no field 'key' \(--id-field\)"):
        check_input(spec(tmp_path, "in.jsonl", text_field="body", id_field="key"))
    with pytest.raises(JobSpecError, match=r"--out .*end it in \.jsonl or \.parquet"):
        check_input(JobSpec(input=str(tmp_path / "in.jsonl"), output=str(tmp_path / "out.csv"), text_field="body"))


def test_unknown_tasks_are_refused_naming_the_known_ones():
    s = JobSpec(input="a.jsonl", output="b.jsonl", tasks=parse_tasks("topic, nope"))
    with pytest.raises(JobSpecError, match=r"unknown task\(s\) \['nope'\]; the bundle's tasks are \['topic', 'entities'\]"):
        check_tasks(s, ["topic", "entities"])
    assert check_tasks(JobSpec(input="a.jsonl", output="b.jsonl"), ["topic"]) == ["topic"]
    with pytest.raises(JobSpecError, match="chunk_records"):
        spec_from(input="a.jsonl", output="b.jsonl", chunk_records=0)


def test_the_window_grows_on_success_and_halves_once_per_refusal_episode():
    w = Window.start(chunk_records=16, max_inflight_records=512)
    assert w.limit == 64 and w.may_send(48, 16, 0.0) and not w.may_send(49, 16, 0.0)
    grown = on_done(w, 64)  # a window's worth of completions: about one chunk wider
    assert grown.limit == pytest.approx(80)
    cut = on_refused(grown, 2.0, now_s=10.0)
    assert cut.limit == pytest.approx(40) and cut.paused_until_s == 12.0
    assert not cut.may_send(0, 16, 11.9) and cut.may_send(0, 16, 12.0)
    assert on_refused(cut, 2.0, now_s=11.0) == cut  # the same episode: not halved again
    floor = on_refused(Window(limit=20, floor=16, ceiling=512), None, 0.0)
    assert floor.limit == 16 and floor.paused_until_s == MIN_PAUSE_S
    assert Window(limit=16, floor=16, ceiling=512).may_send(0, 16, 0.0)  # nothing in flight: one chunk may go
    assert on_done(Window(limit=510, floor=16, ceiling=512), 500).limit == 512


def test_progress_line_says_done_rate_eta_and_refusals_and_parses_back():
    now = [100.0]
    p = Progress(total=1000, already=200, clock=lambda: now[0])
    now[0] = 110.0
    p.done, p.errors, p.refusals = 390, 10, 3
    line = p.line()
    assert "600/1,000 records (60.0 %) (200 from an earlier run)" in line
    assert "40.0 records/s, ETA 10 s, 3 refusals" in line
    log = f"start\n{line}\nother\n{line.replace('600/', '700/')}\n[mtc-batch] done"
    assert parse_progress(log).startswith("700/1,000") and parse_progress("nothing") is None


def test_urgent_misses_count_what_more_urgent_callers_missed():
    from cluster.jobs.flow import urgent_misses

    stats = {"classes": {"interactive": {"refused": 2, "expired": 1}, "standard": {"refused": 5}, "batch": {"refused": 9}},
             "edge": {"interactive": {"met": 90, "late": 4, "refused": 2, "expired": 1, "failed": 0},
                      "standard": {"late": 10}}}
    assert urgent_misses(stats, "batch") == 17  # the gateways' view: late answers count too
    assert urgent_misses(stats, "standard") == 7 and urgent_misses(stats, "interactive") == 0
    assert urgent_misses({"classes": stats["classes"]}, "batch") == 8  # no gateway: the scheduler's view
    assert urgent_misses({}, "batch") == 0
