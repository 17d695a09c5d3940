"""API keys reach the gateway on a cluster, as digests only, and an open API is a decision.

Issue 10, finding 1: the gateway read `MTC_API_KEYS` from its own environment, which on a cluster
is the raylet's, so the operator's keys were silently ignored; keys written in serve.yaml went
verbatim into exported configs and `serve status`.
"""
import json

import pytest
import yaml
from test_gateway_support import ScriptedBackend, client_for, random_bundle_path  # noqa: F401

from cluster.app import _gateway_settings
from cluster.http.keys import as_digest, digest_of, file_entries, split_entry
from cluster.serve_config import ServeConfigError, parse_serve_config
from cluster.serve_export import export_serve_config, seal_api_keys


def _config(**gateway):
    return parse_serve_config({"bundle": "/nonexistent", "gateway": gateway})


def test_entries_become_digests_and_keep_their_class():
    assert split_entry("k:batch") == ("k", "batch")
    assert as_digest("k:batch") == digest_of("k") + ":batch"
    assert as_digest(as_digest("k:batch")) == as_digest("k:batch")  # idempotent
    assert split_entry(as_digest("k")) == (digest_of("k"), None)


def test_the_operators_keys_reach_the_gateway_settings_as_digests(monkeypatch, tmp_path):
    monkeypatch.setenv("MTC_API_KEYS", "op-key-1, bulk-key:batch")
    key_file = tmp_path / "keys"
    key_file.write_text("# keys for the app\nfile-key:standard\n\n")
    settings = _gateway_settings(_config(api_keys_file=str(key_file), settings={"api_keys": ["yaml-key"]}))
    text = json.dumps(settings)
    for plain in ("op-key-1", "bulk-key", "file-key", "yaml-key"):
        assert plain not in text
    assert set(settings["api_keys"]) == {digest_of("yaml-key"), digest_of("op-key-1"),
                                         digest_of("bulk-key") + ":batch", digest_of("file-key") + ":standard"}


def test_an_exported_config_carries_no_key(monkeypatch):
    monkeypatch.setenv("MTC_API_KEYS", "op-key-1")
    exported = yaml.safe_dump(export_serve_config(_config(settings={"api_keys": ["yaml-key:batch"]})))
    assert "op-key-1" not in exported and "yaml-key" not in exported
    assert digest_of("op-key-1") in exported and digest_of("yaml-key") + ":batch" in exported


def test_a_missing_or_empty_key_file_is_an_error_not_an_open_api(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        file_entries(tmp_path / "nope")
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(ValueError, match="holds no key"):
        file_entries(tmp_path / "empty")


def test_the_gateway_checks_bearer_tokens_against_digests(random_bundle_path):
    c = client_for(random_bundle_path, ScriptedBackend(), api_keys=(as_digest("s3cret"), as_digest("bulk:batch")))
    ok = {"Authorization": "Bearer s3cret"}
    assert c.post("/v1/predict", json={"texts": "hi"}, headers=ok).status_code == 200
    assert c.post("/v1/predict", json={"texts": "hi"}, headers={"Authorization": "Bearer " + digest_of("s3cret")}
                  ).status_code == 401  # the digest itself is no key
    bulk = {"Authorization": "Bearer bulk"}
    assert c.post("/v1/predict", json={"texts": "hi", "priority": "interactive"}, headers=bulk).status_code == 403
    assert c.post("/v1/predict", json={"texts": "hi", "priority": "batch"}, headers=bulk).status_code == 200


@pytest.mark.parametrize("host,keys,insecure,ok", [
    ("127.0.0.1", (), False, True),
    ("0.0.0.0", (), False, False),
    ("0.0.0.0", (), True, True),
    ("0.0.0.0", (digest_of("k"),), False, True),
    ("10.0.0.5", (), False, False),
])
def test_serving_beyond_loopback_without_keys_needs_insecure(host, keys, insecure, ok):
    config = parse_serve_config({"http": {"host": host},
                                 "gateway": {"insecure": insecure, "settings": {"api_keys": list(keys)}}})
    if ok:
        seal_api_keys(config)
    else:
        with pytest.raises(ServeConfigError, match="--insecure"):
            seal_api_keys(config)
