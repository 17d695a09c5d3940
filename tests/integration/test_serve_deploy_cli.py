"""The README's `serve deploy` path as an operator runs it, with Ray 2.60's token authentication:
`ray start --head` (RAY_AUTH_MODE=token), `mtc serve BUNDLE --export-config`, `serve deploy
FILE --address http://HEAD:DASHBOARD`, then HTTP, `serve status` and `mtc status --address`,
each a real subprocess. The token is this module's own, in RAY_AUTH_TOKEN (Ray reads it before
~/.ray/auth_token, which is left alone), so the cluster accepts no other.

Also: the `serve` CLI without RAY_AUTH_MODE=token is refused for authentication (at once), and
`mtc status` joins by itself when a token is there (cli/ray_auth.py) and otherwise says what to set,
within seconds instead of Ray's ~20 s of retries and an error that never names the token."""

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
import pytest
import yaml

from tests.net import free_port

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
# Refusals must come from the first answer, not from Ray's retry loop on a bad token (~20 s of
# "gcs_client.cc ... Failed to get cluster ID" and then "Failed to connect to Ray cluster"): that is
# asserted on the output; the time bound only catches a hang, as CLI start-up alone can take 10+ s
# on a loaded 2-core machine.
REFUSED_WITHIN_S = 60


def _no_retry_loop(out: str) -> bool:
    """mtc's probes may log one "Failed to get cluster ID" each (two at most); Ray's loop ~20."""
    return out.count("Failed to get cluster ID") <= 2 and "Failed to connect to Ray cluster" not in out


def _env(**extra) -> dict:
    """The operator's shell: no inherited Ray address, auth settings, or API keys."""
    env = {k: v for k, v in os.environ.items()
           if k not in AUTH_VARS + ("RAY_ADDRESS", "MTC_API_KEYS", "RAY_API_SERVER_ADDRESS")}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env.update({k: v for k, v in extra.items() if v is not None})
    return env


def _run(args: list, env: dict, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    proc = subprocess.run([str(a) for a in args], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    return proc, time.monotonic() - start


def _out(proc: subprocess.CompletedProcess) -> str:
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


def _stop_head(proc: subprocess.Popen, temp_dir: str) -> None:
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


def _start_head(token: str) -> tuple[subprocess.Popen, dict]:
    temp_dir = tempfile.mkdtemp(prefix="mtcsd", dir="/tmp")  # short: Ray's socket paths live under it
    gcs, dashboard, client, node, objects, agent, agent_grpc, runtime_env, metrics = _distinct_ports(9)
    workers = _worker_port_range()
    log = Path(temp_dir) / "ray-start.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus=2", f"--port={gcs}",
             f"--dashboard-port={dashboard}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
             f"--temp-dir={temp_dir}", "--disable-usage-stats", f"--ray-client-server-port={client}",
             f"--min-worker-port={workers}", f"--max-worker-port={workers + 199}",
             f"--node-manager-port={node}", f"--object-manager-port={objects}",
             f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
             f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}"],
            env=_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token), cwd=REPO, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True)
    return proc, {"gcs": f"127.0.0.1:{gcs}", "dashboard": f"http://127.0.0.1:{dashboard}", "token": token,
                  "temp_dir": temp_dir, "log": log}


def _wait_for_dashboard(proc: subprocess.Popen, info: dict, timeout_s: float = 90) -> str | None:
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


@pytest.fixture(scope="module")
def head():
    """A `ray start --head` of its own: its own ports, temp dir and token (a second try on other
    ports if the first head exits while starting, e.g. a port taken meanwhile)."""
    token = secrets.token_hex(32)
    started = []
    try:
        for _attempt in range(2):
            proc, info = _start_head(token)
            started.append((proc, info))
            why = _wait_for_dashboard(proc, info)
            if why is None:
                break
            print(f"\nhead start failed, trying again: {why}", file=sys.stderr)
            _stop_head(proc, info["temp_dir"])
        assert why is None, why
        yield info
    finally:
        for proc, info in started:
            _stop_head(proc, info["temp_dir"])
            shutil.rmtree(info["temp_dir"], ignore_errors=True)


def test_serve_cli_without_token_mode_is_refused(head):
    """The token is in RAY_AUTH_TOKEN, but the serve CLI sends it only with RAY_AUTH_MODE=token."""
    proc, took = _run([BIN / "serve", "status", "--address", head["dashboard"]],
                      _env(RAY_AUTH_TOKEN=head["token"]), timeout=90)
    assert proc.returncode != 0 and "AuthenticationError" in _out(proc), _out(proc)
    assert took < REFUSED_WITHIN_S, (took, _out(proc))


def test_mtc_status_says_what_to_set(head):
    """Mode explicitly off, or a token the head does not know: an error naming the fix, quickly."""
    proc, took = _run([BIN / "mtc", "status", "--address", head["gcs"]],
                      _env(RAY_AUTH_MODE="disabled", RAY_AUTH_TOKEN=head["token"]), timeout=90)
    out = _out(proc)
    assert proc.returncode == 1 and "uses token authentication" in out and "RAY_AUTH_MODE=token" in out, out
    assert _no_retry_loop(out) and took < REFUSED_WITHIN_S, (took, out)

    proc, took = _run([BIN / "mtc", "status", "--address", head["gcs"]],
                      _env(RAY_AUTH_TOKEN="not-the-heads-token"), timeout=90)
    out = _out(proc)
    assert proc.returncode == 1 and "rejected the token from RAY_AUTH_TOKEN" in out, out
    assert "ray get-auth-token" in out, out
    assert _no_retry_loop(out) and took < REFUSED_WITHIN_S, (took, out)


@pytest.fixture(scope="module")
def deployed(head, tiny_bundle, tmp_path_factory):
    """README: `mtc serve BUNDLE --export-config FILE`, then `serve deploy FILE`."""
    http_port = free_port()
    path = tmp_path_factory.mktemp("serve-deploy") / "deploy.yaml"
    operator = _env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=head["token"])
    proc, _ = _run([BIN / "mtc", "serve", tiny_bundle, "--export-config", path, "--port", http_port], operator)
    assert proc.returncode == 0 and path.is_file(), _out(proc)
    spec = yaml.safe_load(path.read_text())
    assert spec["applications"][0]["import_path"] == "cluster.app:build_app"

    proc, _ = _run([BIN / "serve", "deploy", path, "--address", head["dashboard"]], operator)
    assert proc.returncode == 0, _out(proc)
    url = f"http://127.0.0.1:{http_port}"
    deadline, last = time.monotonic() + 120, None
    while True:
        try:
            last = httpx.get(url + "/healthz", timeout=5)
            if last.status_code == 200:
                break
        except httpx.HTTPError as err:
            last = err
        if time.monotonic() > deadline:
            status, _ = _run([BIN / "serve", "status", "--address", head["dashboard"]], operator, timeout=60)
            pytest.fail(f"/healthz not 200 within 120 s: {getattr(last, 'text', last)}\n{_out(status)}")
        time.sleep(2)
    return {"url": url, "operator": operator, "app": spec["applications"][0]["name"]}


def test_deployed_app_answers(deployed):
    r = httpx.post(deployed["url"] + "/v1/predict", timeout=60,
                   json={"texts": ["Apple opened a store in Paris."], "priority": "interactive"})
    assert r.status_code == 200, r.text
    (result,) = r.json()["results"]
    assert result["topic"] and "entities" in result, result


def test_serve_status_reports_it(head, deployed):
    proc, _ = _run([BIN / "serve", "status", "--address", head["dashboard"]], deployed["operator"], timeout=60)
    assert proc.returncode == 0, _out(proc)
    status = yaml.safe_load(proc.stdout)
    app = status["applications"][deployed["app"]]
    assert app["status"] == "RUNNING", proc.stdout
    assert {d: s["status"] for d, s in app["deployments"].items()} == {
        "Gateway": "HEALTHY", "Scheduler": "HEALTHY", "EncoderReplica": "HEALTHY"}, proc.stdout


@pytest.mark.parametrize("auth_mode", ["token", None], ids=["RAY_AUTH_MODE=token", "mode-unset"])
def test_mtc_status_reads_it(head, deployed, auth_mode):
    """With RAY_AUTH_MODE=token as the README says, and without it: mtc turns it on by itself
    when a token is available (here RAY_AUTH_TOKEN) and the head asks for one."""
    proc, _ = _run([BIN / "mtc", "status", "--address", head["gcs"], "--app", deployed["app"]],
                   _env(RAY_AUTH_MODE=auth_mode, RAY_AUTH_TOKEN=head["token"]))
    out = _out(proc)
    assert proc.returncode == 0, out
    for word in ("EncoderReplica", "Scheduler", "interactive", "attainment", "encoder"):
        assert word in out, (word, out)
    if auth_mode is None:
        assert "joining with the token from RAY_AUTH_TOKEN" in out, out
