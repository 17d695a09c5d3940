"""The V2 codec against tritonclient's own encoder/decoder (no network): BYTES layout, binary and
JSON requests, binary and JSON responses, and the errors a malformed body gets."""

import json
import struct
import zlib

import numpy as np
import pytest
import tritonclient.http as th
from tritonclient.utils import deserialize_bytes_tensor as tc_deserialize
from tritonclient.utils import serialize_byte_tensor as tc_serialize

from cluster.http.v2_protocol import (
    HEADER_LENGTH,
    OutputTensor,
    V2CodecError,
    decode_infer_request,
    decompress,
    deserialize_bytes_tensor,
    encode_infer_response,
    serialize_bytes_tensor,
)

WORDS = ["hello", "", "Zürich 🚀", "a" * 300]


def test_bytes_layout_matches_tritonclient():
    ours = serialize_bytes_tensor(WORDS)
    theirs = tc_serialize(np.array([w.encode() for w in WORDS], dtype=np.object_))
    theirs = theirs.item() if theirs.size == 1 else theirs.tobytes()
    assert ours == theirs
    assert deserialize_bytes_tensor(ours) == [w.encode() for w in WORDS]
    assert [x.decode() for x in tc_deserialize(ours)] == WORDS


def _tc_request(binary: bool, shape=None, **kw):
    data = np.array([w.encode() for w in WORDS], dtype=np.object_)
    if shape:
        data = data.reshape(shape)
    inp = th.InferInput("TEXT", list(data.shape), "BYTES")
    inp.set_data_from_numpy(data, binary_data=binary)
    return th.InferenceServerClient.generate_request_body([inp], **kw)


@pytest.mark.parametrize("binary", [True, False])
def test_decode_tritonclient_requests(binary):
    body, json_size = _tc_request(binary, priority=2, timeout=1500, request_id="r1")
    assert (json_size is not None) == binary
    req = decode_infer_request(body, json_size)
    (t,) = req.inputs
    assert (t.name, t.datatype, t.shape) == ("TEXT", "BYTES", (4,))
    assert [x.decode() if isinstance(x, bytes) else x for x in t.data] == WORDS
    assert req.parameters["priority"] == 2 and req.parameters["timeout"] == 1500
    assert req.id == "r1" and req.outputs is None and req.binary_default is True


def test_nested_json_data_is_flattened_row_major():
    body, size = _tc_request(False, shape=(2, 2))
    req = decode_infer_request(body, size)
    assert req.inputs[0].shape == (2, 2) and req.inputs[0].data == WORDS


def test_numeric_inputs_json_and_binary():
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    for binary in (True, False):
        inp = th.InferInput("X", [2, 3], "FP32")
        inp.set_data_from_numpy(arr, binary_data=binary)
        out = th.InferRequestedOutput("Y", binary_data=False)
        body, size = th.InferenceServerClient.generate_request_body([inp], outputs=[out])
        req = decode_infer_request(body, size)
        np.testing.assert_array_equal(np.asarray(req.inputs[0].data).reshape(2, 3), arr)
        assert req.outputs[0].name == "Y" and req.outputs[0].binary is False


@pytest.mark.parametrize("binary_names", [set(), {"LABEL"}, {"SCORES"}, {"LABEL", "SCORES"}])
def test_response_round_trip_through_tritonclient(binary_names):
    scores = np.array([[0.1, 0.9], [0.7, 0.3]], dtype=np.float32)
    outs = [OutputTensor("LABEL", "BYTES", (2,), [b"sport", "Zürich".encode()]),
            OutputTensor("SCORES", "FP32", (2, 2), scores)]
    body, headers = encode_infer_response("topic", outs, binary_names, request_id="x",
                                          parameters={"priority": "standard"})
    size = headers.get(HEADER_LENGTH)
    assert (size is not None) == bool(binary_names)
    res = th.InferenceServerClient.parse_response_body(body, header_length=int(size) if size else None)
    assert [x.decode() if isinstance(x, bytes) else x for x in res.as_numpy("LABEL")] == ["sport", "Zürich"]
    np.testing.assert_allclose(res.as_numpy("SCORES"), scores, atol=1e-7)
    meta = res.get_response()
    assert meta["model_name"] == "topic" and meta["id"] == "x" and meta["parameters"]["priority"] == "standard"


def _req(inputs, **extra):
    return json.dumps({"inputs": inputs, **extra}).encode()


@pytest.mark.parametrize("body,header,words", [
    (b"{nope", None, ["not valid JSON", HEADER_LENGTH]),
    (b"[]", None, ["JSON object"]),
    (_req([]), None, ["non-empty list"]),
    (_req(["x"]), None, ["inputs[0]"]),
    (_req([{"name": "TEXT", "datatype": "STRING", "shape": [1], "data": ["a"]}]), None, ["datatype", "STRING"]),
    (_req([{"name": "TEXT", "datatype": "BYTES", "shape": [2], "data": ["a"]}]), None, ["needs 2", "has 1"]),
    (_req([{"name": "TEXT", "datatype": "BYTES", "shape": [-1], "data": ["a"]}]), None, ["shape"]),
    (_req([{"name": "TEXT", "datatype": "BYTES", "shape": "1", "data": ["a"]}]), None, ["shape"]),
    (_req([{"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": [1]}]), None, ["strings"]),
    (_req([{"name": "TEXT", "datatype": "BYTES", "shape": [1]}]), None, ["missing 'data'"]),
    (_req([{"name": "X", "datatype": "FP32", "shape": [1], "data": ["a"]}]), None, ["FP32 numbers"]),
    (_req([{"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": ["a"]}], outputs=[{"name": "L",
      "parameters": {"classification": 2}}]), None, ["classification extension"]),
    (_req([{"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": ["a"]}], parameters=[]), None,
     ["'parameters'"]),
    (_req([{"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": ["a"]}]), "abc", ["integer"]),
    (_req([{"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": ["a"]}]), 10**6, ["outside"]),
])
def test_malformed_requests(body, header, words):
    with pytest.raises(V2CodecError) as err:
        decode_infer_request(body, header)
    for w in words:
        assert w in str(err.value)


def test_binary_section_mismatches():
    head = _req([{"name": "TEXT", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 9}}])
    good = serialize_bytes_tensor(["hello"])  # 4 + 5 bytes
    assert decode_infer_request(head + good, len(head)).inputs[0].data == [b"hello"]
    with pytest.raises(V2CodecError, match="runs past the end"):
        decode_infer_request(head + good[:-1], len(head))
    with pytest.raises(V2CodecError, match="not claimed"):
        decode_infer_request(head + good + b"xx", len(head))
    bad_len = struct.pack("<I", 100) + b"hello"
    with pytest.raises(V2CodecError, match="runs past the end"):
        decode_infer_request(head + bad_len, len(head))


def test_decompress_and_bomb_guard():
    raw = _req([{"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": ["a"]}])
    assert decompress(zlib.compress(raw), "deflate", 10_000) == raw
    gz = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    assert decompress(gz.compress(raw) + gz.flush(), "gzip", 10_000) == raw
    with pytest.raises(OverflowError):
        decompress(zlib.compress(b"0" * 100_000), "deflate", 10_000)
    with pytest.raises(V2CodecError, match="Content-Encoding"):
        decompress(raw, "br", 10_000)
    with pytest.raises(V2CodecError, match="not valid deflate"):
        decompress(b"garbage", "deflate", 10_000)


def test_deeply_nested_data_does_not_recurse():
    depth = 500  # deep enough for a naive recursive flatten to be costly, shallow enough for json
    data = "[" * depth + '"a"' + "]" * depth
    body = ('{"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [1], "data": %s}]}' % data).encode()
    assert decode_infer_request(body).inputs[0].data == ["a"]
    too_deep = body.replace(data.encode(), b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(V2CodecError, match="nested too deeply|not valid JSON"):
        decode_infer_request(too_deep)
