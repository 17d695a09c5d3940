"""A `ray start --head` of a test's own, as an operator starts one: its own ports, temp dir and
token (RAY_AUTH_MODE=token, the token in RAY_AUTH_TOKEN, so ~/.ray/auth_token is left alone), and
a clean stop of that head only. Shared by the tests that drive the CLIs against a real head."""

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]  # tests/ray_head.py: the checkout
BIN = Path(sys.executable).parent
AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def operator_env(**extra) -> dict:
    """The operator's shell: no inherited Ray address, auth settings, or API keys."""
    env = {k: v for k, v in os.environ.items()
           if k not in AUTH_VARS + ("RAY_ADDRESS", "MTC_API_KEYS", "RAY_API_SERVER_ADDRESS")}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    # as from the project's activated virtualenv: its `ray`, `serve` and `mtc` on PATH (a Ray Job's
    # entrypoint, `mtc batch run ...`, is found on the PATH of the head that `ray start` began)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update({k: v for k, v in extra.items() if v is not None})
    return env


def run_cli(args: list, env: dict, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    proc = subprocess.run([str(a) for a in args], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    return proc, time.monotonic() - start


def squashed(proc: subprocess.CompletedProcess) -> str:
    return " ".join((proc.stdout + proc.stderr).split())  # rich wraps lines


def _distinct_ports(n: int) -> list[int]:
    """n different free ports (each socket stays bound until all are picked)."""
    socks = []
    try:
        for _ in range(n):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _worker_port_range(size: int = 200) -> int:
    """A worker port range below the kernel's ephemeral ports (32768+), free as far as it shows."""
    for _ in range(100):
        base = 12000 + secrets.randbelow(100) * size
        if all(_port_free(base + i) for i in range(0, size, 10)):
            return base
    return base


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def stop_head(proc: subprocess.Popen, temp_dir: str) -> None:
    """Stop this head only: SIGINT to its `ray start --block` (SIGTERM does not stop it in Ray
    2.60), then SIGKILL whatever still runs in its session dir or process group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    deadline = time.monotonic() + 15
    while True:
        left = []
        for p in psutil.process_iter(["cmdline"]):
            try:
                if any(temp_dir in arg for arg in (p.info["cmdline"] or [])) or os.getpgid(p.pid) == proc.pid:
                    left.append(p)
            except (psutil.Error, ProcessLookupError, OSError):
                continue
        if not left or time.monotonic() > deadline:
            break
        time.sleep(1)
    for p in left:
        try:
            p.kill()
        except psutil.Error:
            pass


def start_head(token: str, num_cpus: int = 2) -> tuple[subprocess.Popen, dict]:
    temp_dir = tempfile.mkdtemp(prefix="mtcsd", dir="/tmp")  # short: Ray's socket paths live under it
    gcs, dashboard, client, node, objects, agent, agent_grpc, runtime_env, metrics = _distinct_ports(9)
    workers = _worker_port_range()
    log = Path(temp_dir) / "ray-start.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", "--block", f"--num-cpus={num_cpus}", f"--port={gcs}",
             f"--dashboard-port={dashboard}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
             f"--temp-dir={temp_dir}", "--disable-usage-stats", f"--ray-client-server-port={client}",
             f"--min-worker-port={workers}", f"--max-worker-port={workers + 199}",
             f"--node-manager-port={node}", f"--object-manager-port={objects}",
             f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
             f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}"],
            env=operator_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token), cwd=REPO, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True)
    return proc, {"gcs": f"127.0.0.1:{gcs}", "dashboard": f"http://127.0.0.1:{dashboard}", "token": token,
                  "temp_dir": temp_dir, "log": log}


def wait_for_dashboard(proc: subprocess.Popen, info: dict, timeout_s: float = 90) -> str | None:
    """None once the dashboard's REST API (what `serve deploy` talks to) answers; else why not."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"`ray start` exited {proc.returncode}:\n" + info["log"].read_text()[-3000:]
        try:
            r = httpx.get(info["dashboard"] + "/api/version", timeout=5,
                          headers={"Authorization": f"Bearer {info['token']}"})
            if r.status_code == 200:
                return None
        except httpx.HTTPError:
            pass
        time.sleep(1)
    return "the head's dashboard did not come up within 90 s:\n" + info["log"].read_text()[-3000:]


def own_head(num_cpus: int = 2):
    """For a module fixture (`yield from own_head()`): a head of its own, its info dict (gcs,
    dashboard, token, temp_dir, log); a second try on other ports if the first head exits while
    starting (a port taken meanwhile)."""
    token = secrets.token_hex(32)
    started = []
    try:
        for _attempt in range(2):
            proc, info = start_head(token, num_cpus)
            started.append((proc, info))
            why = wait_for_dashboard(proc, info)
            if why is None:
                break
            print(f"\nhead start failed, trying again: {why}", file=sys.stderr)
            stop_head(proc, info["temp_dir"])
        assert why is None, why
        yield info
    finally:
        for proc, info in started:
            stop_head(proc, info["temp_dir"])
            shutil.rmtree(info["temp_dir"], ignore_errors=True)
