"""API keys: what the gateway stores (digests, never the keys), and where keys come from.

A key entry is `KEY` or `KEY:CLASS` (the most urgent priority class the key may use). Before the
settings leave the process that deploys the application, every key becomes `sha256:<hex>[:CLASS]`:
Serve shows a deployment's arguments in `serve status`, the dashboard and exported configs, and a
SHA-256 digest of a random token is of no use to whoever reads it there. The gateway hashes each
bearer token it is sent and compares digests in constant time.

Where keys come from when `mtc serve` (or `mtc serve --export-config`) builds the application: the
operator's `MTC_API_KEYS` (comma-separated), the file named by serve.yaml's `gateway.api_keys_file`
(one entry per line, `#` comments), and `gateway.settings.api_keys` (discouraged: a YAML file is no
place for secrets). The gateway replica's own environment counts only when none of these gave a
key (a local `uvicorn` run, tests): on a cluster, replicas inherit the raylet's environment, not
the operator's, which is how keys used to be silently off.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

DIGEST_PREFIX = "sha256:"
ENV_VAR = "MTC_API_KEYS"


def split_entry(entry: str) -> tuple[str, str | None]:
    """(key or digest, bound class or None). A digest entry is `sha256:<hex>[:CLASS]`."""
    if entry.startswith(DIGEST_PREFIX):
        body = entry[len(DIGEST_PREFIX):]
        digest, sep, cls = body.partition(":")
        return DIGEST_PREFIX + digest, (cls if sep else None)
    key, sep, cls = entry.rpartition(":")
    return (key, cls) if sep else (entry, None)


def digest_of(key: str | bytes) -> str:
    raw = key.encode() if isinstance(key, str) else key
    return DIGEST_PREFIX + hashlib.sha256(raw).hexdigest()


def as_digest(entry: str) -> str:
    """`KEY[:CLASS]` -> `sha256:<hex>[:CLASS]`; a digest entry is returned as it is."""
    key, cls = split_entry(entry)
    digest = key if key.startswith(DIGEST_PREFIX) else digest_of(key)
    return digest if cls is None else f"{digest}:{cls}"


def env_entries(environ: dict[str, str] | None = None) -> list[str]:
    value = (os.environ if environ is None else environ).get(ENV_VAR, "")
    return [k.strip() for k in value.split(",") if k.strip()]


def file_entries(path: str | Path) -> list[str]:
    """One entry per line; blank lines and `#` comments are skipped. A missing or unreadable file
    is an error (a key file that silently does not exist would leave the API open)."""
    p = Path(path).expanduser()
    try:
        text = p.read_text()
    except OSError as err:
        raise ValueError(f"gateway.api_keys_file: cannot read {str(p)!r} ({err.strerror or err}); "
                         "write one API key per line there, or drop the setting") from None
    lines = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    entries = [ln for ln in lines if ln]
    if not entries:
        raise ValueError(f"gateway.api_keys_file: {str(p)!r} holds no key; write one API key per line")
    return entries


def deploy_digests(settings_entries: Iterable[str], key_file: str | Path | None,
                   environ: dict[str, str] | None = None) -> tuple[str, ...]:
    """Every key the deploying process knows of, as digests (order kept, duplicates dropped)."""
    entries = [*settings_entries, *env_entries(environ)]
    if key_file:
        entries += file_entries(key_file)
    return tuple(dict.fromkeys(as_digest(e) for e in entries))
