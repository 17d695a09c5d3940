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
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from bench.overload_stats import CONN_ERROR, TIMEOUT, WRK_MARK


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

if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])
