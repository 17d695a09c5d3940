"""cli/ray_auth.py: joining a cluster with the token authentication it asks for (Ray 2.60).

The GCS probe is faked here; tests/integration/test_serve_deploy_cli.py runs the real one against
a `ray start --head` with RAY_AUTH_MODE=token."""

import socket
import time

import pytest
from typer.testing import CliRunner

from cli import app as cli
from cli import ray_auth
from cli.ray_auth import ClusterJoinError, prepare_join, token_source

GCS = "10.0.0.1:6379"


@pytest.fixture
def auth_env(monkeypatch, tmp_path):
    """No auth settings, an empty HOME; mode switches and the probe are recorded, not sent."""
    for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    state = {"modes": [], "answers": []}

    def set_mode(mode):
        state["modes"].append(mode)
        if mode is None:
            monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
        else:
            monkeypatch.setenv("RAY_AUTH_MODE", mode)

    def probe(gcs, timeout_s=5.0):  # the cluster requires a token; it accepts state["accepts"]
        import os

        mode = os.environ.get("RAY_AUTH_MODE")
        sent = os.environ.get("RAY_AUTH_TOKEN") if mode == "token" else None
        if not state["requires"]:
            return False
        return sent != state["accepts"]

    state.update(requires=True, accepts="right")
    monkeypatch.setattr(ray_auth, "_set_auth_mode", set_mode)
    monkeypatch.setattr(ray_auth, "probe_requires_token", probe)
    monkeypatch.setattr(ray_auth, "_gcs_address", lambda address: GCS)
    monkeypatch.setattr(ray_auth.socket, "create_connection", lambda *a, **k: socket.socket())
    return state


def test_token_source_follows_rays_order(auth_env, monkeypatch, tmp_path):
    assert token_source() is None
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("abc\n")
    assert token_source() == "~/.ray/auth_token"
    other = tmp_path / "tok"
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(other))
    assert token_source() is None  # Ray reads only that path once it is set
    other.write_text("x")
    assert token_source().startswith("RAY_AUTH_TOKEN_PATH")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "t")
    assert token_source() == "RAY_AUTH_TOKEN"


def test_mode_unset_and_a_token_here_turns_token_mode_on(auth_env, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", "right")
    note = prepare_join("auto")
    assert auth_env["modes"] == ["token"] and "joining with the token from RAY_AUTH_TOKEN" in note


def test_mode_token_and_the_right_token_changes_nothing(auth_env, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "right")
    assert prepare_join("auto") is None
    assert auth_env["modes"] == ["disabled", "token"]  # probed without the token, then restored


def test_no_token_says_where_to_get_one(auth_env):
    with pytest.raises(ClusterJoinError, match="no token here") as err:
        prepare_join("auto")
    assert "RAY_AUTH_MODE=token" in str(err.value) and "ray get-auth-token" in str(err.value)


def test_mode_disabled_is_not_overridden(auth_env, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "right")
    with pytest.raises(ClusterJoinError, match="RAY_AUTH_MODE=disabled here: set RAY_AUTH_MODE=token"):
        prepare_join("auto")


def test_a_rejected_token_is_named_and_the_mode_restored(auth_env, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_TOKEN", "wrong")
    with pytest.raises(ClusterJoinError, match="rejected the token from RAY_AUTH_TOKEN"):
        prepare_join("auto")
    assert auth_env["modes"] == ["token", None]


def test_token_mode_against_a_cluster_without_auth_is_turned_off(auth_env, monkeypatch):
    """A token-mode driver on such a cluster connects, but its actors never start."""
    auth_env["requires"] = False
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    note = prepare_join("auto")
    assert auth_env["modes"][-1] == "disabled" and "does not use token authentication" in note
    auth_env["modes"].clear()
    monkeypatch.delenv("RAY_AUTH_MODE")
    assert prepare_join("auto") is None and auth_env["modes"] == []


def test_unknown_answer_and_ray_client_are_left_to_ray_init(auth_env, monkeypatch):
    monkeypatch.setattr(ray_auth, "probe_requires_token", lambda gcs, timeout_s=5.0: None)
    assert prepare_join("auto") is None and auth_env["modes"] == []
    monkeypatch.undo()
    assert ray_auth._gcs_address("ray://head:10001") is None


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mtc_status_on_a_dead_address_fails_fast():
    start = time.monotonic()
    result = CliRunner().invoke(cli, ["status", "--address", f"127.0.0.1:{_closed_port()}"])
    output = " ".join(result.output.split())
    assert result.exit_code == 1 and "cannot join the Ray cluster: nothing answers at" in output, output
    assert time.monotonic() - start < 10


def test_mtc_status_and_serve_print_the_join_error(monkeypatch, tiny_bundle):
    from cli import serve_cmds

    def refuse(address, **_):
        raise ClusterJoinError("the Ray cluster at x uses token authentication ... set RAY_AUTH_MODE=token")

    monkeypatch.setattr(serve_cmds, "join_ray", refuse)
    for args in (["status", "--address", "10.0.0.1:6379"],
                 ["serve", str(tiny_bundle), "--address", "10.0.0.1:6379"]):
        result = CliRunner().invoke(cli, args)
        output = " ".join(result.output.split())
        assert result.exit_code == 1, output
        assert "cannot join the Ray cluster: the Ray cluster at x uses token authentication" in output, output
        assert "RAY_AUTH_MODE=token" in output
