"""Open Inference Protocol (KServe V2) codec, with Triton's binary-data extension.

Pure functions over bytes and dicts: no FastAPI, no model. The gateway's V2 routes call
`decode_infer_request` on the raw body and `encode_infer_response` on the result tensors.

Wire format (KServe "Open Inference Protocol" REST + Triton's binary_data extension):
- A request body is JSON, or, when the `Inference-Header-Content-Length: N` header is present,
  N bytes of JSON followed by the raw bytes of every input whose `parameters.binary_data_size`
  is set, in the order the inputs are listed.
- Raw tensor bytes are little-endian, row-major. A BYTES tensor is a sequence of elements, each a
  4-byte little-endian unsigned length followed by that many bytes.
- JSON `data` is row-major and may be flat or nested; we flatten it and check it against `shape`.
- A response carries an output in binary when the request asked for it: per output with
  `outputs[i].parameters.binary_data`, or for all outputs with `parameters.binary_data_output`.
  Then the response has the same layout and the `Inference-Header-Content-Length` header.
- Errors are `{"error": "<message>"}`.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

HEADER_LENGTH = "Inference-Header-Content-Length"

# V2 datatype -> numpy dtype (little-endian); BYTES is handled separately.
NUMPY_DTYPES: dict[str, str] = {
    "BOOL": "?", "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
    "INT8": "<i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
    "FP16": "<f2", "FP32": "<f4", "FP64": "<f8",
}
DATATYPES = frozenset(NUMPY_DTYPES) | {"BYTES", "BF16"}


class V2CodecError(ValueError):
    """The request body is not a valid V2 request; the message says what to fix (HTTP 400)."""


@dataclass(frozen=True)
class InputTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: list[Any] | np.ndarray  # BYTES: list[bytes | str]; numeric: np.ndarray (flat)
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool | None  # None: fall back to the request-level `binary_data_output`


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    inputs: tuple[InputTensor, ...]
    outputs: tuple[RequestedOutput, ...] | None  # None: every output of the model
    parameters: dict[str, Any]

    @property
    def binary_default(self) -> bool:
        return bool(self.parameters.get("binary_data_output", False))


@dataclass(frozen=True)
class OutputTensor:
    name: str
    datatype: str  # "BYTES" or "FP32"
    shape: tuple[int, ...]
    data: list[bytes] | np.ndarray  # BYTES: list of bytes; FP32: array of that shape


# ---------------------------------------------------------------- BYTES tensors


def serialize_bytes_tensor(items: list[bytes | str]) -> bytes:
    """Triton's BYTES layout: each element as a 4-byte LE length, then the bytes."""
    parts = []
    for item in items:
        raw = item.encode("utf-8") if isinstance(item, str) else bytes(item)
        parts.append(struct.pack("<I", len(raw)))
        parts.append(raw)
    return b"".join(parts)


def deserialize_bytes_tensor(raw: bytes, name: str = "input") -> list[bytes]:
    items, offset, size = [], 0, len(raw)
    while offset < size:
        if offset + 4 > size:
            raise V2CodecError(f"input '{name}': truncated BYTES element length at byte {offset}")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > size:
            raise V2CodecError(
                f"input '{name}': BYTES element of {length} bytes runs past the end of its "
                f"{size}-byte binary data"
            )
        items.append(raw[offset:offset + length])
        offset += length
    return items


# ---------------------------------------------------------------- request decoding


def decompress(body: bytes, encoding: str | None, max_bytes: int) -> bytes:
    """Undo `Content-Encoding: gzip|deflate` (tritonclient's request_compression_algorithm),
    refusing to inflate past `max_bytes` so a small bomb cannot exhaust memory."""
    if not encoding or encoding.lower() == "identity":
        return body
    enc = encoding.lower()
    if enc not in ("gzip", "deflate"):
        raise V2CodecError(f"unsupported Content-Encoding '{encoding}'; use gzip, deflate or none")
    wbits = 16 + zlib.MAX_WBITS if enc == "gzip" else zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, max_bytes + 1)
    except zlib.error as err:
        raise V2CodecError(f"body is not valid {enc} data: {err}") from None
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise OverflowError(f"decompressed body exceeds the limit of {max_bytes} bytes")
    return out


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value
    ):
        raise V2CodecError(f"{where}.shape must be a list of non-negative integers, got {value!r}")
    return tuple(value)


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:  # iterative: a deeply nested list must not hit the recursion limit
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _decode_input(obj: Any, i: int, binary: bytes, offset: int) -> tuple[InputTensor, int]:
    where = f"inputs[{i}]"
    if not isinstance(obj, dict):
        raise V2CodecError(f"{where} must be an object with name, datatype, shape and data")
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise V2CodecError(f"{where}.name must be a non-empty string")
    where = f"input '{name}'"
    datatype = obj.get("datatype")
    if datatype not in DATATYPES:
        raise V2CodecError(f"{where}: datatype must be one of {sorted(DATATYPES)}, got {datatype!r}")
    shape = _shape(obj.get("shape"), where)
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    params = {} if obj.get("parameters") is None else obj["parameters"]
    if not isinstance(params, dict):
        raise V2CodecError(f"{where}.parameters must be an object")
    size = params.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise V2CodecError(f"{where}: parameters.binary_data_size must be a non-negative integer")
        if "data" in obj:
            raise V2CodecError(f"{where}: give either JSON 'data' or binary_data_size, not both")
        if offset + size > len(binary):
            raise V2CodecError(
                f"{where}: binary_data_size {size} runs past the end of the binary section "
                f"({len(binary) - offset} bytes left)"
            )
        raw = binary[offset:offset + size]
        offset += size
        if datatype == "BYTES":
            data: list[Any] | np.ndarray = deserialize_bytes_tensor(raw, name)
        elif datatype == "BF16":
            raise V2CodecError(f"{where}: BF16 inputs are not supported")
        else:
            dtype = np.dtype(NUMPY_DTYPES[datatype])
            if size % dtype.itemsize:
                raise V2CodecError(f"{where}: {size} bytes is not a whole number of {datatype}")
            data = np.frombuffer(raw, dtype=dtype)
    else:
        if "data" not in obj:
            raise V2CodecError(f"{where}: missing 'data' (or parameters.binary_data_size)")
        flat = _flatten(obj["data"])
        if datatype == "BYTES":
            bad = [type(x).__name__ for x in flat if not isinstance(x, str)]
            if bad:
                raise V2CodecError(f"{where}: BYTES data must be strings, got {bad[0]}")
            data = flat
        elif datatype == "BF16":
            raise V2CodecError(f"{where}: BF16 inputs are not supported")
        else:
            try:
                data = np.asarray(flat, dtype=np.dtype(NUMPY_DTYPES[datatype]))
            except (TypeError, ValueError, OverflowError):
                raise V2CodecError(f"{where}: data is not a list of {datatype} numbers") from None
    if len(data) != count:
        raise V2CodecError(f"{where}: shape {list(shape)} needs {count} elements, data has {len(data)}")
    return InputTensor(name, datatype, shape, data, params), offset


def decode_infer_request(body: bytes, header_length: str | int | None = None) -> InferRequest:
    """Parse a V2 infer request body (JSON, or JSON + binary section)."""
    if header_length is not None:
        try:
            n = int(header_length)
        except (TypeError, ValueError):
            raise V2CodecError(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
        if n < 0 or n > len(body):
            raise V2CodecError(f"{HEADER_LENGTH} {n} is outside the {len(body)}-byte body")
        head, binary = body[:n], body[n:]
    else:
        head, binary = body, b""
    try:
        obj = json.loads(head)
    except RecursionError:
        raise V2CodecError("request body JSON is nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as err:
        hint = "" if header_length is not None else f" (binary data needs the {HEADER_LENGTH} header)"
        raise V2CodecError(f"request body is not valid JSON: {err}{hint}") from None
    if not isinstance(obj, dict):
        raise V2CodecError("request body must be a JSON object with an 'inputs' list")
    raw_inputs = obj.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise V2CodecError("'inputs' must be a non-empty list of tensors")
    params = {} if obj.get("parameters") is None else obj["parameters"]
    if not isinstance(params, dict):
        raise V2CodecError("'parameters' must be an object")
    rid = obj.get("id")
    if rid is not None and not isinstance(rid, str):
        raise V2CodecError("'id' must be a string")
    inputs, offset = [], 0
    for i, raw in enumerate(raw_inputs):
        tensor, offset = _decode_input(raw, i, binary, offset)
        inputs.append(tensor)
    if offset != len(binary):
        raise V2CodecError(
            f"binary section has {len(binary) - offset} bytes not claimed by any input's binary_data_size"
        )
    outputs = _decode_outputs(obj.get("outputs"))
    return InferRequest(rid, tuple(inputs), outputs, params)


def _decode_outputs(raw: Any) -> tuple[RequestedOutput, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise V2CodecError("'outputs' must be a list of {name, parameters}")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise V2CodecError(f"outputs[{i}] must be an object with a string 'name'")
        params = {} if item.get("parameters") is None else item["parameters"]
        if not isinstance(params, dict):
            raise V2CodecError(f"outputs[{i}].parameters must be an object")
        if params.get("classification"):
            raise V2CodecError(
                f"outputs[{i}]: the classification extension (class_count) is not supported; "
                "read the LABEL and SCORES outputs instead"
            )
        binary = params.get("binary_data")
        out.append(RequestedOutput(item["name"], None if binary is None else bool(binary)))
    return tuple(out)


# ---------------------------------------------------------------- response encoding


def encode_infer_response(
    model_name: str,
    outputs: list[OutputTensor],
    binary_names: set[str],
    *,
    request_id: str | None = None,
    model_version: str = "1",
    parameters: dict[str, Any] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """Return (body, headers). Outputs named in `binary_names` go to the binary section."""
    header: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        header["id"] = request_id
    if parameters:
        header["parameters"] = parameters
    blobs: list[bytes] = []
    out_json = []
    for t in outputs:
        entry: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
        if t.name in binary_names:
            if t.datatype == "BYTES":
                blob = serialize_bytes_tensor(list(t.data))
            else:
                blob = np.ascontiguousarray(t.data, dtype=NUMPY_DTYPES[t.datatype]).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif t.datatype == "BYTES":
            entry["data"] = [b.decode("utf-8") if isinstance(b, bytes) else str(b) for b in t.data]
        else:
            entry["data"] = np.asarray(t.data, dtype=np.float64).reshape(-1).tolist()
        out_json.append(entry)
    header["outputs"] = out_json
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    if not blobs:
        return head, {"Content-Type": "application/json"}
    return head + b"".join(blobs), {
        "Content-Type": "application/octet-stream",
        HEADER_LENGTH: str(len(head)),
    }
