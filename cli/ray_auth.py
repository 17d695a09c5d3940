"""Joining an existing Ray cluster with the right token authentication (Ray 2.60).

`ray start --head` turns token authentication on when a token exists (~/.ray/auth_token, or
RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH, or RAY_AUTH_MODE=token), but a client sends its token only
with RAY_AUTH_MODE=token in its own environment. Without it `ray.init(address=...)` retries
"InvalidAuthToken" for ~20 s and then says only "Failed to connect to Ray cluster". The opposite
mismatch is worse: a driver in token mode joined to a cluster without authentication connects, but
its workers cannot call back into it (its actors die "before they started running").

`prepare_join(address)` asks the cluster's GCS once, without a token, whether it requires one
(a few ms), before `ray.init(address=...)`:
- it does and RAY_AUTH_MODE is unset: a token available here (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH,
  ~/.ray/auth_token, the order Ray reads them) turns token mode on for this process, as
  `ray start` itself does; no token, or RAY_AUTH_MODE=disabled, or a token the cluster rejects,
  is a `ClusterJoinError` that says what to set.
- it does not and RAY_AUTH_MODE=token: token mode is turned off for this process (with a note).
- nothing listens at the address: a `ClusterJoinError` after at most `connect_timeout_s`.
Anything else (a `ray://` address, no answer from the GCS) is left to `ray.init`.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

AUTH_MODE_ENV = "RAY_AUTH_MODE"
TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
WHERE_THE_TOKEN_IS = ("`ray get-auth-token` on the head prints it (the head's ~/.ray/auth_token); put it in "
                      f"{TOKEN_ENV} or ~/.ray/auth_token here")


class ClusterJoinError(RuntimeError):
    """This process cannot join the Ray cluster; the message says what to set or check."""


def _token() -> tuple[str, str] | None:
    """(where Ray would read a token from here, the token), in Ray's order; None without one."""
    if os.environ.get(TOKEN_ENV, "").strip():
        return TOKEN_ENV, os.environ[TOKEN_ENV].strip()
    path = os.environ.get(TOKEN_PATH_ENV)
    file = Path(path).expanduser() if path else Path.home() / ".ray" / "auth_token"
    source = f"{TOKEN_PATH_ENV} ({file})" if path else "~/.ray/auth_token"
    token = file.read_text().strip() if file.is_file() else ""
    return (source, token) if token else None


def token_source() -> str | None:
    """Where Ray would read a token from here, in Ray's order; None without one."""
    found = _token()
    return found[0] if found else None


def local_token() -> str | None:
    """The token Ray would send from here (for callers of the REST APIs with httpx)."""
    found = _token()
    return found[1] if found else None


def _set_auth_mode(mode: str | None) -> None:
    """RAY_AUTH_MODE for this process (and what it starts; None: unset), re-read by Ray's config
    as `ray start` does."""
    from ray._raylet import Config  # noqa: PLC0415

    if mode is None:
        os.environ.pop(AUTH_MODE_ENV, None)
    else:
        os.environ[AUTH_MODE_ENV] = mode
    Config.initialize("")


def _gcs_address(address: str) -> str | None:
    """The GCS host:port that `ray.init(address)` would join; None where it is not ours to probe."""
    if address.startswith("ray://"):
        return None
    try:
        from ray._private.services import canonicalize_bootstrap_address  # noqa: PLC0415

        return canonicalize_bootstrap_address(address)
    except Exception:  # noqa: BLE001 - e.g. `auto` and no local cluster: ray.init says so itself
        return None


def _split(gcs: str) -> tuple[str, int]:
    host, _, port = gcs.rpartition(":")
    return host.strip("[]"), int(port)


def probe_requires_token(gcs: str, timeout_s: float = 5.0) -> bool | None:
    """Whether the GCS at `gcs` refuses a call in this process's current auth mode: True (it
    refused for authentication), False (it answered), None (no answer: unknown)."""
    from ray._raylet import InnerGcsClient  # noqa: PLC0415
    from ray.exceptions import AuthenticationError  # noqa: PLC0415

    try:
        client = InnerGcsClient.standalone(gcs, None, int(timeout_s * 1000))
        client.internal_kv_get(b"__mtc_auth_probe", None, timeout_s)
        return False
    except AuthenticationError:
        return True
    except Exception:  # noqa: BLE001 - not reachable as a GCS: leave it to ray.init
        return None


def _probe_without_token(gcs: str) -> bool | None:
    mode = os.environ.get(AUTH_MODE_ENV)
    if (mode or "disabled").lower() != "token":
        return probe_requires_token(gcs)
    _set_auth_mode("disabled")
    try:
        return probe_requires_token(gcs)
    finally:
        _set_auth_mode(mode)


def prepare_join(address: str, connect_timeout_s: float = 5.0) -> str | None:
    """Set this process's token mode to match the cluster at `address` before `ray.init(address)`.
    Returns a note to print (or None); raises ClusterJoinError with what to fix."""
    import ray  # noqa: PLC0415

    if ray.is_initialized():  # already joined: flipping the mode now would disturb the live worker
        return None
    gcs = _gcs_address(address)
    if gcs is None:
        return None
    try:
        host, port = _split(gcs)
        socket.create_connection((host, port), timeout=connect_timeout_s).close()
    except (OSError, ValueError) as err:
        raise ClusterJoinError(f"nothing answers at {gcs} ({address!r}): {err}. Is the head up "
                               f"(`ray start --head --port {gcs.rpartition(':')[2]}`)?") from None
    requires = _probe_without_token(gcs)
    mode = (os.environ.get(AUTH_MODE_ENV) or "").lower()
    if requires is None:
        return None
    if not requires:
        if mode == "token":
            _set_auth_mode("disabled")
            return (f"the Ray cluster at {gcs} does not use token authentication: joining without it "
                    f"({AUTH_MODE_ENV}=token would leave its workers unable to reach this process)")
        return None
    note = None
    if mode and mode != "token":
        raise ClusterJoinError(
            f"the Ray cluster at {gcs} uses token authentication, but {AUTH_MODE_ENV}={mode} here: "
            f"set {AUTH_MODE_ENV}=token (the `serve` and `ray` CLIs need it too); {WHERE_THE_TOKEN_IS}")
    source = token_source()
    if source is None:
        raise ClusterJoinError(
            f"the Ray cluster at {gcs} uses token authentication and there is no token here: "
            f"{WHERE_THE_TOKEN_IS}, and set {AUTH_MODE_ENV}=token (the `serve` and `ray` CLIs need it too)")
    if not mode:
        _set_auth_mode("token")
        note = (f"the Ray cluster at {gcs} uses token authentication: joining with the token from {source} "
                f"({AUTH_MODE_ENV}=token for this process; the `serve` and `ray` CLIs need it set in the shell)")
    if probe_requires_token(gcs):
        if not mode:
            _set_auth_mode(None)
        raise ClusterJoinError(
            f"the Ray cluster at {gcs} rejected the token from {source}: {WHERE_THE_TOKEN_IS}")
    return note


def prepare_jobs_api() -> None:
    """Token mode for the Jobs API (`mtc submit`, `mtc jobs`): the dashboard asks for the token as
    the GCS does, and Ray's SDK sends it only with RAY_AUTH_MODE=token. With a token here and the
    mode unset, turn it on for this process (a dashboard without authentication ignores it)."""
    if not os.environ.get(AUTH_MODE_ENV) and token_source() is not None:
        _set_auth_mode("token")
