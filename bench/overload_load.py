"""The low-CPU client of `mtc bench overload`: wrk (closed loop), an open-loop generator, and the
statistics over what they saw (no Ray, no model here).

Why not httpx in the driver (bench/serve_load.py): on a 2-core machine the client competes with the
servers it measures, and an httpx client spends about a millisecond of CPU per request, as much as
the Serve proxy. So:
- the closed-loop flood is `wrk` (C, one thread, epoll) with a Lua script that varies the body and
  counts statuses;
- open loop (a Poisson trace replayed on time, and the 10 req/s interactive probe) is
  `python -m bench.overload_load SPEC OUT`: a separate process, asyncio Protocols over raw sockets,
  prebuilt HTTP/1.1 request bytes, a keep-alive connection pool and a minimal response parser.
  Neither `vegeta` nor `wrk2` is packaged in Debian 12, and `hey -o csv` drops the requests that
  timed out, so a lost request would vanish from the denominator.
Every client runs as a child process; its CPU seconds come from `os.wait4` (its own rusage) and are
shown in the report as a share of the machine, so the reader can see what the client took.

Latency in open loop is measured from the request's SCHEDULED time, not from when the client got
round to sending it, so a lagging client cannot hide queueing (coordinated omission).
"""
from __future__ import annotations

import asyncio
import json
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

INTERACTIVE, BATCH, STANDARD = "interactive", "batch", "standard"
TIMEOUT = 0        # status recorded for a request the client gave up on
CONN_ERROR = -1    # status recorded when the connection failed or closed before an answer
WRK_MARK = "OVERLOAD_JSON "


# --------------------------------------------------------------------------- schedules (pure)

def poisson_schedule(rate: float, duration_s: float, interactive_frac: float,
                     seed: int = 7) -> list[tuple[float, bool]]:
    """Arrival times of a Poisson process at `rate`/s over [0, duration_s), each flagged
    interactive with probability `interactive_frac`. Seeded: both stacks replay the same trace."""
    if rate <= 0 or duration_s <= 0:
        return []
    rng = random.Random(seed)
    t, out = 0.0, []
    while True:
        t += rng.expovariate(rate)
        if t >= duration_s:
            return out
        out.append((t, rng.random() < interactive_frac))


def fixed_rate_schedule(rate: float, duration_s: float, interactive: bool = True,
                        offset_s: float = 0.0) -> list[tuple[float, bool]]:
    """One request every 1/rate s (the interactive probe: a caller at a steady 10 req/s)."""
    if rate <= 0:
        return []
    n = int(math.floor(duration_s * rate))
    return [(offset_s + k / rate, interactive) for k in range(n)]


# --------------------------------------------------------------------------- HTTP bytes (pure)

def http_request(host: str, port: int, path: str, body: dict | list) -> bytes:
    payload = json.dumps(body, separators=(",", ":")).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n")
    return head.encode() + payload


def parse_response(buf: bytes | bytearray) -> tuple[int, int, bool] | None:
    """(status, bytes consumed, keep_alive) of the first complete HTTP/1.1 response in `buf`, or
    None when it is not complete yet. Handles Content-Length and chunked bodies; bodies are
    skipped, not decoded (the status is all the statistics need)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end]).decode("latin-1")
    lines = head.split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise ValueError(f"not an HTTP response: {lines[0]!r}")
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    keep_alive = headers.get("connection", "").lower() != "close" and parts[0] != "HTTP/1.0"
    pos = end + 4
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            line_end = buf.find(b"\r\n", pos)
            if line_end < 0:
                return None
            size = int(bytes(buf[pos:line_end]).split(b";")[0].strip() or b"0", 16)
            pos = line_end + 2
            if size == 0:
                trailer_end = buf.find(b"\r\n", pos)   # no trailers expected: one empty line
                if trailer_end < 0:
                    return None
                return status, trailer_end + 2, keep_alive
            if len(buf) < pos + size + 2:
                return None
            pos += size + 2
    if "content-length" in headers:
        total = pos + int(headers["content-length"])
        return (status, total, keep_alive) if len(buf) >= total else None
    if status in (204, 304) or 100 <= status < 200:
        return status, pos, keep_alive
    return None   # body delimited by close: the caller completes it on connection loss


# --------------------------------------------------------------------------- open-loop generator

class _Conn(asyncio.Protocol):
    def __init__(self, pool: "_Pool"):
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        try:
            parsed = parse_response(self.buf)
        except ValueError:
            parsed = (CONN_ERROR, len(self.buf), False)
        if parsed is None or self.waiter is None:
            return
        status, used, keep = parsed
        del self.buf[:used]
        waiter, self.waiter = self.waiter, None
        if not waiter.done():
            waiter.set_result((status, keep))

    def connection_lost(self, exc) -> None:
        self.transport = None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((CONN_ERROR, False))
        self.waiter = None


class _Pool:
    """Keep-alive connections to one host; one request in flight per connection (no pipelining)."""

    def __init__(self, host: str, port: int, max_connections: int):
        self.host, self.port, self.max = host, port, max_connections
        self.idle: list[_Conn] = []
        self.open = 0
        self.peak = 0

    async def get(self) -> _Conn | None:
        while self.idle:
            conn = self.idle.pop()
            if conn.transport is not None and not conn.transport.is_closing():
                return conn
            self.open -= 1
        if self.open >= self.max:
            return None
        self.open += 1
        self.peak = max(self.peak, self.open)
        try:
            _, conn = await asyncio.get_running_loop().create_connection(lambda: _Conn(self), self.host, self.port)
        except OSError:
            self.open -= 1
            return None
        return conn

    def put(self, conn: _Conn, keep: bool) -> None:
        if keep and conn.transport is not None and not conn.transport.is_closing():
            self.idle.append(conn)
        else:
            self.drop(conn)

    def drop(self, conn: _Conn) -> None:
        if conn.transport is not None:
            conn.transport.close()
        self.open -= 1


async def replay(host: str, port: int, requests: list[bytes], schedule: list[tuple[float, int]],
                 timeout_s: float, max_connections: int = 8000) -> dict[str, Any]:
    """Send `requests[i]` at each scheduled (t_s, i), on time whatever the answers do. Returns
    per-request (scheduled t, latency from the scheduled time, status) and the client's own lag."""
    pool = _Pool(host, port, max_connections)
    loop = asyncio.get_running_loop()
    n = len(schedule)
    latency = [float("nan")] * n
    status = [TIMEOUT] * n
    lag_max = 0.0

    async def one(k: int, t0: float, req: bytes) -> None:
        conn = await pool.get()
        if conn is None:
            status[k], latency[k] = CONN_ERROR, loop.time() - t0
            return
        conn.waiter = loop.create_future()
        conn.transport.write(req)
        remaining = timeout_s - (loop.time() - t0)
        try:
            code, keep = await asyncio.wait_for(conn.waiter, max(0.001, remaining))
        except asyncio.TimeoutError:
            conn.waiter = None
            pool.drop(conn)   # the answer may still come: this connection cannot be reused
            status[k], latency[k] = TIMEOUT, loop.time() - t0
            return
        status[k], latency[k] = code, loop.time() - t0
        pool.put(conn, keep and code != CONN_ERROR)

    start = loop.time() + 0.05
    pending = []
    for k, (t, idx) in enumerate(schedule):
        due = start + t
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        lag_max = max(lag_max, loop.time() - due)
        pending.append(asyncio.ensure_future(one(k, due, requests[idx])))
    if pending:
        await asyncio.gather(*pending)
    wall = loop.time() - start
    for conn in pool.idle:
        if conn.transport is not None:
            conn.transport.close()
    return {"latency_s": latency, "status": status, "wall_s": wall, "send_lag_max_ms": 1000 * lag_max,
            "peak_connections": pool.peak}


def _main(spec_path: str, out_path: str) -> None:
    """Child-process entry: read SPEC (JSON), replay, write OUT (JSON). Prints nothing."""
    spec = json.loads(Path(spec_path).read_text())
    requests = [r.encode("latin-1") for r in spec["requests"]]
    schedule = [(float(t), int(i)) for t, i in spec["schedule"]]
    try:
        import uvloop  # noqa: PLC0415  (cheaper event loop when installed)
        uvloop.install()
    except ImportError:
        pass
    out = asyncio.run(replay(spec["host"], int(spec["port"]), requests, schedule, float(spec["timeout_s"]),
                             int(spec.get("max_connections", 8000))))
    Path(out_path).write_text(json.dumps(out))


# --------------------------------------------------------------------------- child processes

@dataclass
class ChildRun:
    """A client process: what it printed, its exit code, wall time and its own CPU seconds."""
    stdout: str
    returncode: int
    wall_s: float
    cpu_s: float


class Child:
    """Start a client process whose CPU use is read exactly from `os.wait4` when it ends."""

    def __init__(self, argv: list[str], env: dict | None = None):
        self._out = tempfile.TemporaryFile(mode="w+")
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(argv, stdout=self._out, stderr=subprocess.STDOUT, env=env)

    def wait(self, timeout_s: float) -> ChildRun:
        deadline = time.perf_counter() + timeout_s
        while True:
            pid, wstatus, usage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                self.proc.kill()
                pid, wstatus, usage = os.wait4(self.proc.pid, 0)
                break
            time.sleep(0.05)
        self.proc.returncode = os.waitstatus_to_exitcode(wstatus)
        wall = time.perf_counter() - self.t0
        self._out.seek(0)
        text = self._out.read()
        self._out.close()
        return ChildRun(text, self.proc.returncode, wall, usage.ru_utime + usage.ru_stime)


def start_replay(host: str, port: int, requests: list[bytes], schedule: list[tuple[float, int]],
                 timeout_s: float, workdir: Path) -> tuple[Child, Path]:
    workdir.mkdir(parents=True, exist_ok=True)
    fd, spec = tempfile.mkstemp(suffix=".json", dir=workdir)
    out = Path(spec).with_suffix(".out.json")
    with os.fdopen(fd, "w") as f:
        json.dump({"host": host, "port": port, "timeout_s": timeout_s, "schedule": schedule,
                   "requests": [r.decode("latin-1") for r in requests]}, f)
    return Child([sys.executable, "-m", "bench.overload_load", spec, str(out)], env=_child_env()), out


def _child_env() -> dict:
    # The child imports `bench.overload_load`: make that work from a checkout and when installed.
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def wrk_script(bodies: list[dict | list]) -> str:
    """A wrk Lua script that POSTs the JSON `bodies` round-robin and prints, when done, one line
    `OVERLOAD_JSON {...}` with the status counts of every thread, the run's totals and percentiles."""
    items = ",\n".join(f"[==[{json.dumps(b, separators=(',', ':'))}]==]" for b in bodies)
    return f"""-- generated by bench/overload_load.py
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local bodies = {{
{items}
}}
local threads = {{}}
function setup(thread) table.insert(threads, thread) end
function init(args)
  counts = {{}}
  i = math.random(#bodies)
end
function request()
  i = i % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end
function done(summary, latency, requests)
  local total = {{}}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("counts")) do total[k] = (total[k] or 0) + v end
  end
  local parts = {{}}
  for k, v in pairs(total) do table.insert(parts, string.format('"%d":%d', k, v)) end
  local e = summary.errors
  io.write(string.format(
    '{WRK_MARK}{{"duration_us":%d,"requests":%d,"bytes":%d,"statuses":{{%s}},' ..
    '"errors":{{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}},' ..
    '"p50_us":%d,"p99_us":%d,"mean_us":%.1f}}\\n',
    summary.duration, summary.requests, summary.bytes, table.concat(parts, ","),
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


def start_wrk(url: str, connections: int, duration_s: float, script: Path, timeout_s: float,
              threads: int = 1) -> Child:
    return Child(["wrk", f"-t{min(threads, connections)}", f"-c{connections}", f"-d{max(1, round(duration_s))}s",
                  f"--timeout={max(1, round(timeout_s))}s", "-s", str(script), url])


def start_hey(url: str, rate: float, workers: int, duration_s: float, body: dict, timeout_s: float) -> Child:
    """`hey` at `rate` req/s in total over `workers` workers (hey's -q is per worker), CSV out."""
    return Child(["hey", "-z", f"{max(1, round(duration_s))}s", "-c", str(workers), "-q", f"{rate / workers:g}",
                  "-t", str(max(1, round(timeout_s))), "-m", "POST", "-T", "application/json",
                  "-d", json.dumps(body), "-o", "csv", url])


# --------------------------------------------------------------------------- parsing (pure)

@dataclass
class WrkResult:
    duration_s: float
    requests: int
    statuses: dict[int, int]
    errors: dict[str, int]
    p50_ms: float
    p99_ms: float

    def count(self, code: int) -> int:
        return self.statuses.get(code, 0)


def parse_wrk_output(text: str) -> WrkResult:
    """The `OVERLOAD_JSON` line our Lua script prints at the end of a wrk run."""
    for line in text.splitlines():
        if line.startswith(WRK_MARK):
            d = json.loads(line[len(WRK_MARK):])
            return WrkResult(d["duration_us"] / 1e6, d["requests"], {int(k): v for k, v in d["statuses"].items()},
                             d["errors"], d["p50_us"] / 1000, d["p99_us"] / 1000)
    raise ValueError("wrk printed no result line (is the Lua script's done() running?); output was:\n"
                     + text[-2000:])


_HEY_ROW = re.compile(r"^\s*([0-9.]+),[^,]*,[^,]*,[^,]*,[^,]*,[^,]*,(\d+),([0-9.]+)\s*$")


def parse_hey_csv(text: str) -> list[tuple[float, float, int]]:
    """(offset_s, latency_s, status) per answered request of `hey -o csv`. hey leaves out the
    requests that failed or timed out: callers must count those from the rate they asked for."""
    rows = []
    for line in text.splitlines():
        m = _HEY_ROW.match(line)
        if m:
            rows.append((float(m.group(3)), float(m.group(1)), int(m.group(2))))
    return rows


# --------------------------------------------------------------------------- statistics (pure)

def pct_ms(latencies_s: list[float], q: float) -> float | None:
    vals = [x for x in latencies_s if x == x]
    return round(1000 * float(np.percentile(vals, q)), 1) if vals else None


@dataclass
class ClassStats:
    """What one priority class saw at the client in one window."""
    sent: int = 0
    ok: int = 0                 # 200, any lateness
    met: int = 0                # 200 within the deadline (every 200 when there is no deadline)
    ok_in_window: int = 0       # 200s that finished inside the measurement window (throughput)
    statuses: dict[str, int] = field(default_factory=dict)
    latencies_ok_s: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"sent": self.sent, "ok": self.ok, "met": self.met,
                "attainment": round(self.met / self.sent, 4) if self.sent else None,
                "p50_ms": pct_ms(self.latencies_ok_s, 50), "p99_ms": pct_ms(self.latencies_ok_s, 99),
                "refused_429": self.statuses.get("429", 0), "expired_504": self.statuses.get("504", 0),
                "timeouts": self.statuses.get("timeout", 0), "statuses": dict(sorted(self.statuses.items()))}


def status_name(code: int) -> str:
    return {TIMEOUT: "timeout", CONN_ERROR: "conn-error"}.get(code, str(code))


def class_stats(records: list[tuple[float, float, int]], deadline_s: float | None,
                window_s: float | None = None) -> ClassStats:
    """Statistics of one class from (scheduled t_s, latency_s, status) records. A request meets
    its deadline only when answered 200 within it: 429, 504, timeouts and errors are misses."""
    st = ClassStats()
    for t, lat, code in records:
        st.sent += 1
        name = status_name(code)
        st.statuses[name] = st.statuses.get(name, 0) + 1
        if code != 200:
            continue
        st.ok += 1
        st.latencies_ok_s.append(lat)
        if deadline_s is None or lat <= deadline_s:
            st.met += 1
        if window_s is None or t + lat <= window_s:
            st.ok_in_window += 1
    return st


def replay_records(out: dict, schedule: list[tuple[float, int]]) -> list[tuple[float, float, int]]:
    return [(t, lat, code) for (t, _), lat, code in zip(schedule, out["latency_s"], out["status"])]


def hey_records(rows: list[tuple[float, float, int]], rate: float, duration_s: float) -> list[tuple[float, float, int]]:
    """hey's answered rows plus one TIMEOUT record per request the caller meant to send at
    `rate` over `duration_s` but that hey never reported (failed, timed out or not sent because
    the earlier ones were slow)."""
    expected = int(math.floor(rate * duration_s))
    missing = max(0, expected - len(rows))
    return list(rows) + [(duration_s, float("nan"), TIMEOUT)] * missing


def cpu_share(cpu_s: float, wall_s: float, cores: int | None = None) -> float:
    """CPU seconds as a share of the whole machine over `wall_s` (1.0 = every core busy)."""
    cores = cores or os.cpu_count() or 1
    return round(cpu_s / (wall_s * cores), 4) if wall_s > 0 else 0.0


def window_metrics(interactive: ClassStats, batch: ClassStats, window_s: float, client_cpu_s: float,
                   client_wall_s: float, cores: int | None = None, **extra: Any) -> dict[str, Any]:
    """One scenario x stack: the figures the report tables show."""
    return {
        "interactive": interactive.summary(), "batch": batch.summary(),
        "attainment": interactive.summary()["attainment"],
        "batch_goodput_rps": round(batch.ok_in_window / window_s, 2) if window_s else 0.0,
        "throughput_rps": round((batch.ok_in_window + interactive.ok_in_window) / window_s, 2) if window_s else 0.0,
        "client_cpu_s": round(client_cpu_s, 2), "client_cpu_share": cpu_share(client_cpu_s, client_wall_s, cores),
        "window_s": round(window_s, 2), **extra,
    }


def wrk_batch_stats(w: WrkResult) -> ClassStats:
    """A closed-loop wrk run as the batch class's statistics (wrk keeps no per-request records:
    counts only; every answer finished inside its own run, so in-window = answered)."""
    st = ClassStats(sent=w.requests + w.errors.get("timeout", 0))
    for code, n in w.statuses.items():
        st.statuses[str(code)] = n
    if w.errors.get("timeout"):
        st.statuses["timeout"] = w.errors["timeout"]
    st.ok = st.met = st.ok_in_window = w.count(200)
    return st


def to_json(obj: Any) -> Any:
    return asdict(obj) if hasattr(obj, "__dataclass_fields__") else obj


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])
