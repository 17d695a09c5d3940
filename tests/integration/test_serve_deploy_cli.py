"""The README's `serve deploy` path as an operator runs it, with Ray 2.60's token authentication:
`ray start --head` (RAY_AUTH_MODE=token), `mtc serve BUNDLE --export-config`, `serve deploy
FILE --address http://HEAD:DASHBOARD`, then HTTP, `serve status` and `mtc status --address`,
each a real subprocess. The token is this module's own, in RAY_AUTH_TOKEN (Ray reads it before
~/.ray/auth_token, which is left alone), so the cluster accepts no other.

Also: the `serve` CLI without RAY_AUTH_MODE=token is refused for authentication (at once), and
`mtc status` joins by itself when a token is there (cli/ray_auth.py) and otherwise says what to set,
within seconds instead of Ray's ~20 s of retries and an error that never names the token."""

import time

import httpx
import pytest
import yaml

from tests.net import free_port
from tests.ray_head import BIN, operator_env, own_head, run_cli, squashed

pytestmark = pytest.mark.ray

# Refusals must come from the first answer, not from Ray's retry loop on a bad token (~20 s of
# "gcs_client.cc ... Failed to get cluster ID" and then "Failed to connect to Ray cluster"): that is
# asserted on the output; the time bound only catches a hang, as CLI start-up alone can take 10+ s
# on a loaded 2-core machine.
REFUSED_WITHIN_S = 60


def _no_retry_loop(out: str) -> bool:
    """mtc's probes may log one "Failed to get cluster ID" each (two at most); Ray's loop ~20."""
    return out.count("Failed to get cluster ID") <= 2 and "Failed to connect to Ray cluster" not in out


@pytest.fixture(scope="module")
def head():
    yield from own_head()


def test_serve_cli_without_token_mode_is_refused(head):
    """The token is in RAY_AUTH_TOKEN, but the serve CLI sends it only with RAY_AUTH_MODE=token."""
    proc, took = run_cli([BIN / "serve", "status", "--address", head["dashboard"]],
                      operator_env(RAY_AUTH_TOKEN=head["token"]), timeout=90)
    assert proc.returncode != 0 and "AuthenticationError" in squashed(proc), squashed(proc)
    assert took < REFUSED_WITHIN_S, (took, squashed(proc))


def test_mtc_status_says_what_to_set(head):
    """Mode explicitly off, or a token the head does not know: an error naming the fix, quickly."""
    proc, took = run_cli([BIN / "mtc", "status", "--address", head["gcs"]],
                      operator_env(RAY_AUTH_MODE="disabled", RAY_AUTH_TOKEN=head["token"]), timeout=90)
    out = squashed(proc)
    assert proc.returncode == 1 and "uses token authentication" in out and "RAY_AUTH_MODE=token" in out, out
    assert _no_retry_loop(out) and took < REFUSED_WITHIN_S, (took, out)

    proc, took = run_cli([BIN / "mtc", "status", "--address", head["gcs"]],
                      operator_env(RAY_AUTH_TOKEN="not-the-heads-token"), timeout=90)
    out = squashed(proc)
    assert proc.returncode == 1 and "rejected the token from RAY_AUTH_TOKEN" in out, out
    assert "ray get-auth-token" in out, out
    assert _no_retry_loop(out) and took < REFUSED_WITHIN_S, (took, out)


@pytest.fixture(scope="module")
def deployed(head, tiny_bundle, tmp_path_factory):
    """README: `mtc serve BUNDLE --export-config FILE`, then `serve deploy FILE`."""
    http_port = free_port()
    path = tmp_path_factory.mktemp("serve-deploy") / "deploy.yaml"
    operator = operator_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=head["token"])
    proc, _ = run_cli([BIN / "mtc", "serve", tiny_bundle, "--export-config", path, "--port", http_port], operator)
    assert proc.returncode == 0 and path.is_file(), squashed(proc)
    spec = yaml.safe_load(path.read_text())
    assert spec["applications"][0]["import_path"] == "cluster.app:build_app"

    proc, _ = run_cli([BIN / "serve", "deploy", path, "--address", head["dashboard"]], operator)
    assert proc.returncode == 0, squashed(proc)
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
            status, _ = run_cli([BIN / "serve", "status", "--address", head["dashboard"]], operator, timeout=60)
            pytest.fail(f"/healthz not 200 within 120 s: {getattr(last, 'text', last)}\n{squashed(status)}")
        time.sleep(2)
    return {"url": url, "operator": operator, "app": spec["applications"][0]["name"]}


def test_deployed_app_answers(deployed):
    r = httpx.post(deployed["url"] + "/v1/predict", timeout=60,
                   json={"texts": ["Apple opened a store in Paris."], "priority": "interactive"})
    assert r.status_code == 200, r.text
    (result,) = r.json()["results"]
    assert result["topic"] and "entities" in result, result


def test_serve_status_reports_it(head, deployed):
    proc, _ = run_cli([BIN / "serve", "status", "--address", head["dashboard"]], deployed["operator"], timeout=60)
    assert proc.returncode == 0, squashed(proc)
    status = yaml.safe_load(proc.stdout)
    app = status["applications"][deployed["app"]]
    assert app["status"] == "RUNNING", proc.stdout
    assert {d: s["status"] for d, s in app["deployments"].items()} == {
        "Gateway": "HEALTHY", "Scheduler": "HEALTHY", "EncoderReplica": "HEALTHY"}, proc.stdout


@pytest.mark.parametrize("auth_mode", ["token", None], ids=["RAY_AUTH_MODE=token", "mode-unset"])
def test_mtc_status_reads_it(head, deployed, auth_mode):
    """With RAY_AUTH_MODE=token as the README says, and without it: mtc turns it on by itself
    when a token is available (here RAY_AUTH_TOKEN) and the head asks for one."""
    proc, _ = run_cli([BIN / "mtc", "status", "--address", head["gcs"], "--app", deployed["app"]],
                   operator_env(RAY_AUTH_MODE=auth_mode, RAY_AUTH_TOKEN=head["token"]))
    out = squashed(proc)
    assert proc.returncode == 0, out
    for word in ("EncoderReplica", "Scheduler", "interactive", "attainment", "encoder"):
        assert word in out, (word, out)
    if auth_mode is None:
        assert "joining with the token from RAY_AUTH_TOKEN" in out, out
