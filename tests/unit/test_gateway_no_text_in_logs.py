"""No request text in the gateway's log (issue 10, finding 15): a caller's text may come back in
its own error answer, never in a log line. The served end-to-end check (every Ray and Serve log
file) is tests/integration/test_no_text_in_logs.py; these pin the two ways text used to get there."""

import logging

from test_gateway_support import ScriptedBackend, client_for, random_bundle_path  # noqa: F401

from cluster.http.errors import log_unexpected

MARKER = "marker-5f0c1e9b2d7a4c38"


def _logged(caplog) -> str:
    return "\n".join(caplog.handler.format(r) for r in caplog.records)


def test_a_lone_surrogate_echoed_in_an_error_is_escaped_not_a_500(random_bundle_path, caplog):
    """It made the answer unencodable: 500, and the traceback (the ApiError's message: the caller's
    text) went to the log."""
    client = client_for(random_bundle_path, ScriptedBackend())
    body = b'{"texts": "hello", "priority": "' + MARKER.encode() + b' \\ud800"}'
    with caplog.at_level(logging.DEBUG):
        r = client.post("/v1/predict", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert MARKER in r.json()["error"] and "\\ud800" in r.json()["error"]  # the caller sees its own text
    assert MARKER not in _logged(caplog)


def test_an_unexpected_error_quoting_the_text_is_logged_without_its_message(random_bundle_path, caplog,
                                                                            monkeypatch):
    """A bug whose exception quotes the request (here post-processing; as pydantic's validation
    errors do) is logged with its type and stack under the incident id the caller gets."""
    client = client_for(random_bundle_path, ScriptedBackend())

    def broken(task, raw, enc, text):
        raise ValueError(f"cannot post-process {text!r}")

    monkeypatch.setattr(client.app.state.edge.bundle, "postprocess", broken)
    with caplog.at_level(logging.DEBUG):
        r = client.post("/v1/predict", json={"texts": f"Shares of {MARKER} rose.", "tasks": ["topic"]})
    assert r.status_code == 500 and "Traceback" not in r.text
    logged = _logged(caplog)
    assert MARKER not in logged
    incident = r.json()["error"].split("incident ")[1].split(")")[0]
    assert incident in logged and "ValueError" in logged and "in broken" in logged  # still debuggable


def test_log_unexpected_withholds_every_message_of_the_chain(caplog):
    try:
        try:
            raise KeyError(MARKER)
        except KeyError as inner:
            raise RuntimeError(f"while handling {MARKER}") from inner
    except RuntimeError as err:
        with caplog.at_level(logging.ERROR, logger="mtc.gateway"):
            incident = log_unexpected("on POST /v1/predict", err)
    logged = _logged(caplog)
    assert MARKER not in logged
    assert incident in logged and "builtins.KeyError" in logged and "builtins.RuntimeError" in logged
    assert logged.index("KeyError") < logged.index("RuntimeError")  # the cause first, as Python prints it
