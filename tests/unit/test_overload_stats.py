"""The pure parts of `mtc bench overload`: wrk/hey output parsing, schedules, HTTP response parsing,
attainment and throughput statistics, the report's tables (no Ray, no server, no wrk)."""
from __future__ import annotations

import math

import pytest

from bench.overload_load import (
    fixed_rate_schedule,
    http_request,
    parse_response,
    poisson_schedule,
    wrk_script,
)
from bench.overload_report import ratio, scenario_table, stdout_table
from bench.overload_stats import (
    CONN_ERROR,
    TIMEOUT,
    WRK_MARK,
    class_stats,
    cpu_share,
    hey_records,
    parse_hey_csv,
    parse_wrk_output,
    window_metrics,
    wrk_batch_stats,
)

WRK_OUT = f"""Running 5s test @ http://127.0.0.1:4000/v1/predict
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   512.08ms   85.86ms 948.09ms   77.83%
  540 requests in 5.00s, 1.21MB read
  Non-2xx or 3xx responses: 40
Requests/sec:    107.94
{WRK_MARK}{{"duration_us":5002000,"requests":540,"bytes":1210000,"statuses":{{"200":500,"429":40}},"errors":{{"connect":0,"read":0,"write":0,"status":40,"timeout":3}},"p50_us":498123,"p99_us":901234,"mean_us":512080.5}}
"""

HEY_CSV = """response-time,DNS+dialup,DNS,Request-write,Response-delay,Response-read,status-code,offset
0.2100,0.0007,0.0000,0.0004,0.2014,0.0002,200,0.1043
1.3000,0.0001,0.0000,0.0005,1.2012,0.0004,200,0.2049
0.0090,0.0000,0.0000,0.0001,0.0080,0.0000,429,0.3047
"""


def test_parse_wrk_output_reads_the_script_line():
    w = parse_wrk_output(WRK_OUT)
    assert w.duration_s == pytest.approx(5.002)
    assert w.requests == 540 and w.count(200) == 500 and w.count(429) == 40 and w.count(504) == 0
    assert w.errors["timeout"] == 3
    assert w.p50_ms == pytest.approx(498.123) and w.p99_ms == pytest.approx(901.234)


def test_parse_wrk_output_without_the_line_says_why():
    with pytest.raises(ValueError, match="no result line"):
        parse_wrk_output("Running 5s test @ http://x\nunable to connect to 127.0.0.1:1 Connection refused\n")


def test_wrk_batch_stats_counts_timeouts_as_sent_misses():
    st = wrk_batch_stats(parse_wrk_output(WRK_OUT)).summary()
    assert st["sent"] == 543 and st["ok"] == 500 and st["refused_429"] == 40 and st["timeouts"] == 3


def test_wrk_script_embeds_every_body_and_the_marker():
    script = wrk_script([{"texts": "a ]] b", "priority": "batch"}, {"texts": ["x"]}])
    assert '[==[{"texts":"a ]] b","priority":"batch"}]==]' in script
    assert '[==[{"texts":["x"]}]==]' in script
    assert WRK_MARK.strip() in script and "function done" in script


def test_parse_hey_csv_and_missing_requests_count_as_timeouts():
    rows = parse_hey_csv(HEY_CSV)
    assert rows == [(0.1043, 0.21, 200), (0.2049, 1.3, 200), (0.3047, 0.009, 429)]
    recs = hey_records(rows, rate=10, duration_s=0.5)   # 5 meant, 3 reported
    assert len(recs) == 5 and [r[2] for r in recs[3:]] == [TIMEOUT, TIMEOUT]
    st = class_stats(recs, deadline_s=1.0).summary()
    assert st["met"] == 1 and st["attainment"] == pytest.approx(0.2)
    assert st["refused_429"] == 1 and st["timeouts"] == 2


def test_poisson_schedule_rate_fraction_and_determinism():
    trace = poisson_schedule(200.0, 50.0, 0.2, seed=3)
    assert trace == poisson_schedule(200.0, 50.0, 0.2, seed=3)
    assert trace != poisson_schedule(200.0, 50.0, 0.2, seed=4)
    n = len(trace)
    assert abs(n - 10_000) < 4 * math.sqrt(10_000)          # Poisson count: mean 10k, sd 100
    share = sum(inter for _, inter in trace) / n
    assert abs(share - 0.2) < 0.02
    times = [t for t, _ in trace]
    assert times == sorted(times) and 0 < times[0] and times[-1] < 50.0
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert sum(gaps) / len(gaps) == pytest.approx(1 / 200, rel=0.05)   # exponential gaps, mean 1/rate
    assert poisson_schedule(0, 10, 0.2) == [] and poisson_schedule(5, 0, 0.2) == []


def test_fixed_rate_schedule():
    s = fixed_rate_schedule(10, 2.0)
    assert len(s) == 20 and s[0] == (0.0, True) and s[1][0] == pytest.approx(0.1) and s[-1][0] < 2.0


def test_parse_response_content_length_and_partial():
    raw = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n{\"a\":1}"
    assert parse_response(raw[:-1]) is None
    assert parse_response(raw) == (200, len(raw), True)
    two = raw + b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
    assert parse_response(two)[:2] == (200, len(raw))
    assert parse_response(two[len(raw):]) == (429, len(two) - len(raw), False)


def test_parse_response_chunked():
    raw = b"HTTP/1.1 504 Gateway Timeout\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n"
    assert parse_response(raw) == (504, len(raw), True)
    assert parse_response(raw[:-2]) is None
    with pytest.raises(ValueError):
        parse_response(b"garbage\r\n\r\n")


def test_http_request_bytes():
    req = http_request("127.0.0.1", 8123, "/v1/predict", {"texts": "hé"})
    head, body = req.split(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1:8123")
    assert f"Content-Length: {len(body)}".encode() in head and body == b'{"texts":"h\\u00e9"}'   # ASCII JSON


def test_attainment_counts_refusals_late_answers_and_errors_as_misses():
    recs = [(0.0, 0.2, 200), (0.1, 1.5, 200), (0.2, 0.01, 429), (0.3, 0.5, 504), (0.4, 15.0, TIMEOUT),
            (0.5, 0.0, CONN_ERROR), (0.6, 0.9, 200)]
    st = class_stats(recs, deadline_s=1.0, window_s=1.0)
    s = st.summary()
    assert s["sent"] == 7 and s["ok"] == 3 and s["met"] == 2
    assert s["attainment"] == pytest.approx(2 / 7, abs=1e-4)
    assert s["refused_429"] == 1 and s["expired_504"] == 1 and s["timeouts"] == 1
    assert s["statuses"]["conn-error"] == 1
    assert st.ok_in_window == 1          # 0.1 + 1.5 and 0.6 + 0.9 finish after the 1 s window
    assert s["p50_ms"] == pytest.approx(900.0)   # over the 200s, late ones included


def test_class_without_deadline_meets_on_any_200_and_empty_class():
    st = class_stats([(0.0, 9.0, 200), (1.0, 0.1, 429)], deadline_s=None)
    assert st.met == 1 and st.summary()["attainment"] == 0.5
    empty = class_stats([], 1.0).summary()
    assert empty["attainment"] is None and empty["p99_ms"] is None


def test_window_metrics_and_cpu_share():
    inter = class_stats([(0.0, 0.1, 200), (1.0, 0.2, 200)], 1.0, 10.0)
    batch = class_stats([(k / 10, 0.5, 200) for k in range(50)] + [(9.9, 0.5, 200)], None, 10.0)
    m = window_metrics(inter, batch, 10.0, client_cpu_s=1.0, client_wall_s=10.0, cores=2)
    assert m["attainment"] == 1.0
    assert m["batch_goodput_rps"] == 5.0          # the answer at 9.9 + 0.5 is outside the window
    assert m["throughput_rps"] == 5.2
    assert m["client_cpu_share"] == 0.05
    assert cpu_share(2.0, 0.0, 2) == 0.0 and cpu_share(4.0, 2.0, 2) == 1.0


def _metrics(att, thr):
    inter = class_stats([(0.0, 0.1, 200)] * int(10 * att) + [(0.0, 0.0, 429)] * (10 - int(10 * att)), 1.0, 10.0)
    batch = class_stats([(0.0, 0.2, 200)] * int(10 * thr), None, 10.0)
    return window_metrics(inter, batch, 10.0, 0.5, 10.0, cores=2)


def test_report_tables_side_by_side_with_ratio():
    row = {"scenario": "ii", "label": "2x capacity", "load": 2.0, "unit": "x capacity",
           "stacks": {"plain": _metrics(0.1, 10), "ours": _metrics(1.0, 13)}}
    lines = scenario_table([row])
    assert len(lines) == 4 and "| 2x capacity | plain | **10.0%**" in lines[2]
    assert "| ours | **100.0%**" in lines[3] and "1.39x" in lines[3]   # (10 + 130) / (1 + 100) 200s
    text = stdout_table({"scenarios": [row], "capacity": {"single_rps": 100.0}})
    assert "ii 2x capacity" in text and "100.0%" in text and "single text 100.0" in text
    assert ratio(13, 10) == 1.3 and ratio(None, 10) is None and ratio(5, 0) is None
