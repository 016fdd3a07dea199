"""Interop tests: drive a running Tollgate with the real Triton client library.

The gateway's own tests can only show that it agrees with itself. These tests
use `tritonclient` (HTTP and gRPC), i.e. the code real users point at a KServe
V2 server, and compare every answer with onnxruntime run directly on the same
model file. A wire-format mistake (byte order, datatype names, binary-data
framing, raw vs typed gRPC contents, shapes) shows up here as a mismatch.

Run against a gateway that serves `models/` (digits, int_scorer and labels, version 1):

    TOLLGATE_HTTP=127.0.0.1:8000 TOLLGATE_GRPC=127.0.0.1:8001 \
        python -m pytest tests/interop

Dependencies are pinned in tests/interop/requirements.txt.
"""

import dataclasses
import functools
import json
import os
import pathlib
import queue

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import (
    InferenceServerException,
    deserialize_bytes_tensor,
    np_to_triton_dtype,
    triton_to_np_dtype,
)

MODELS_DIR = pathlib.Path(__file__).resolve().parents[2] / "models"
MODEL_NAMES = ["digits", "int_scorer", "labels"]
MODEL_VERSION = "1"

# Generous per-call limit: a hung gateway should fail a test, not the CI job.
TIMEOUT_S = 30.0

# Float outputs may differ from onnxruntime in the last bits if the gateway
# links a different onnxruntime build; anything beyond this is a real error.
FLOAT_ATOL = 1e-5

# onnxruntime's type strings -> KServe V2 datatype names.
ORT_TO_KSERVE = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

# KServe datatype -> field of InferTensorContents carrying it (gRPC typed form).
TYPED_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


# ---------------------------------------------------------------------------
# Reference data: the model file itself, run by onnxruntime
# ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str  # KServe name
    shape: tuple  # -1 for dynamic dims


@dataclasses.dataclass(frozen=True)
class Reference:
    inputs: tuple  # of TensorSpec
    outputs: tuple  # of TensorSpec
    rows: dict  # input name -> np.ndarray, all test rows as one batch
    expected: dict  # output name -> np.ndarray from onnxruntime for `rows`
    pinned: dict  # output name -> np.ndarray recorded in test_rows.json

    @property
    def output_names(self):
        return [o.name for o in self.outputs]

    def batch(self, start, stop):
        return {name: arr[start:stop] for name, arr in self.rows.items()}

    def expected_for(self, start, stop):
        return {name: arr[start:stop] for name, arr in self.expected.items()}

    @property
    def n_rows(self):
        return len(next(iter(self.rows.values())))


def _tensor_specs(args):
    # onnxruntime reports a symbolic dim as a string (or None); KServe says -1.
    return tuple(
        TensorSpec(a.name, ORT_TO_KSERVE[a.type], tuple(d if isinstance(d, int) else -1 for d in a.shape))
        for a in args
    )


@functools.lru_cache(maxsize=None)
def reference(model):
    """Load test_rows.json and what onnxruntime answers for it (cached)."""
    path = MODELS_DIR / model / MODEL_VERSION / "model.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = _tensor_specs(session.get_inputs())
    outputs = _tensor_specs(session.get_outputs())

    test_rows = json.loads((MODELS_DIR / model / "test_rows.json").read_text())
    rows = {
        spec.name: np.asarray(test_rows[spec.name], dtype=triton_to_np_dtype(spec.datatype))
        for spec in inputs
    }
    names = [o.name for o in outputs]
    expected = dict(zip(names, session.run(names, rows)))
    # test_rows.json pins some outputs (the predicted labels) as plain values,
    # so a regenerated model that silently changed behaviour is noticed too.
    pinned = {
        spec.name: np.asarray(test_rows[spec.name], dtype=triton_to_np_dtype(spec.datatype))
        for spec in outputs
        if spec.name in test_rows
    }
    for name, values in pinned.items():
        assert np.array_equal(expected[name], values), (
            f"{model}: onnxruntime disagrees with test_rows.json for {name!r}; "
            "rerun scripts/make_models.py"
        )
    return Reference(inputs, outputs, rows, expected, pinned)


def as_text(arr):
    """BYTES elements as str: tritonclient gives bytes from binary data, str from JSON, and
    onnxruntime str, so they are compared as the text they all are."""
    return np.vectorize(lambda v: v.decode("utf-8") if isinstance(v, bytes) else v, otypes=[object])(arr)


def assert_same(name, have, want):
    assert have is not None, f"{name}: no data decoded"
    assert have.dtype == want.dtype, f"{name}: dtype {have.dtype}, expected {want.dtype}"
    assert have.shape == want.shape, f"{name}: shape {have.shape}, expected {want.shape}"
    if np.issubdtype(want.dtype, np.floating):
        np.testing.assert_allclose(have, want, rtol=0, atol=FLOAT_ATOL, err_msg=name)
    elif want.dtype == np.object_:
        assert as_text(have).tolist() == as_text(want).tolist(), name
    else:
        np.testing.assert_array_equal(have, want, err_msg=name)


def assert_outputs_match(model, got, expected):
    ref = reference(model)
    assert set(got) == set(expected), f"outputs returned: {sorted(got)}"
    for spec in ref.outputs:
        assert_same(spec.name, got[spec.name], expected[spec.name])


# ---------------------------------------------------------------------------
# Connection to the gateway under test
# ---------------------------------------------------------------------------

def _address(var):
    value = os.environ.get(var)
    if not value:
        pytest.fail(
            f"{var} is not set. Start the gateway and export TOLLGATE_HTTP and "
            "TOLLGATE_GRPC as host:port (e.g. 127.0.0.1:8000 / 127.0.0.1:8001).",
            pytrace=False,
        )
    # tritonclient wants host:port without a scheme.
    for scheme in ("http://", "grpc://"):
        if value.startswith(scheme):
            value = value[len(scheme):]
    return value.rstrip("/")


@dataclasses.dataclass
class Gateway:
    http_addr: str
    grpc_addr: str
    http: httpclient.InferenceServerClient
    grpc: grpcclient.InferenceServerClient
    stub: service_pb2_grpc.GRPCInferenceServiceStub


@pytest.fixture(scope="session")
def gateway():
    http_addr = _address("TOLLGATE_HTTP")
    grpc_addr = _address("TOLLGATE_GRPC")
    channel = grpc.insecure_channel(grpc_addr)
    gw = Gateway(
        http_addr=http_addr,
        grpc_addr=grpc_addr,
        http=httpclient.InferenceServerClient(
            url=http_addr, connection_timeout=TIMEOUT_S, network_timeout=TIMEOUT_S
        ),
        grpc=grpcclient.InferenceServerClient(url=grpc_addr),
        stub=service_pb2_grpc.GRPCInferenceServiceStub(channel),
    )
    yield gw
    gw.http.close()
    gw.grpc.close()
    channel.close()


# ---------------------------------------------------------------------------
# Health and metadata, one adapter per protocol
# ---------------------------------------------------------------------------

class HttpApi:
    def __init__(self, gw):
        self.client = gw.http

    def live(self):
        return self.client.is_server_live()

    def ready(self):
        return self.client.is_server_ready()

    def model_ready(self, model, version):
        # Any non-200 answer (e.g. 404 for an unknown model) reads as False.
        return self.client.is_model_ready(model, version)

    def server_metadata(self):
        md = self.client.get_server_metadata()
        return md.get("name"), md.get("version")

    def model_metadata(self, model, version):
        md = self.client.get_model_metadata(model, version)

        def specs(items):
            return {t["name"]: TensorSpec(t["name"], t["datatype"], tuple(t["shape"])) for t in items}

        return md["name"], list(md.get("versions", [])), specs(md["inputs"]), specs(md["outputs"])


class GrpcApi:
    def __init__(self, gw):
        self.client = gw.grpc

    def live(self):
        return self.client.is_server_live(client_timeout=TIMEOUT_S)

    def ready(self):
        return self.client.is_server_ready(client_timeout=TIMEOUT_S)

    def model_ready(self, model, version):
        # A server may answer an unknown model with ready=false or with an
        # error status; both mean "not ready" to a client.
        try:
            return self.client.is_model_ready(model, version, client_timeout=TIMEOUT_S)
        except InferenceServerException:
            return False

    def server_metadata(self):
        md = self.client.get_server_metadata(client_timeout=TIMEOUT_S)
        return md.name, md.version

    def model_metadata(self, model, version):
        # Use the protobuf, not as_json: JSON renders int64 shapes as strings.
        md = self.client.get_model_metadata(model, version, client_timeout=TIMEOUT_S)

        def specs(items):
            return {t.name: TensorSpec(t.name, t.datatype, tuple(t.shape)) for t in items}

        return md.name, list(md.versions), specs(md.inputs), specs(md.outputs)


APIS = {"http": HttpApi, "grpc": GrpcApi}


@pytest.fixture(params=sorted(APIS))
def api(request, gateway):
    return APIS[request.param](gateway)


def test_server_live_and_ready(api):
    assert api.live() is True
    assert api.ready() is True


@pytest.mark.parametrize("version", ["", MODEL_VERSION], ids=["latest", "v1"])
@pytest.mark.parametrize("model", MODEL_NAMES)
def test_model_ready(api, model, version):
    assert api.model_ready(model, version) is True


@pytest.mark.parametrize(
    "model,version", [("no_such_model", ""), ("digits", "999")], ids=["unknown-model", "unknown-version"]
)
def test_model_not_ready(api, model, version):
    assert api.model_ready(model, version) is False


def test_server_metadata(api):
    name, version = api.server_metadata()
    assert name, "server metadata has no name"
    assert version, "server metadata has no version"


@pytest.mark.parametrize("version", ["", MODEL_VERSION], ids=["latest", "v1"])
@pytest.mark.parametrize("model", MODEL_NAMES)
def test_model_metadata(api, model, version):
    ref = reference(model)
    name, versions, inputs, outputs = api.model_metadata(model, version)
    assert name == model
    # `versions` is optional in KServe V2, but if listed it must include ours.
    if versions:
        assert MODEL_VERSION in versions, versions
    # Compared by name: KServe does not promise any ordering of tensors.
    assert inputs == {s.name: s for s in ref.inputs}
    assert outputs == {s.name: s for s in ref.outputs}


# ---------------------------------------------------------------------------
# Inference, one helper per wire format
# ---------------------------------------------------------------------------

def infer_http(gw, model, version, inputs, outputs, binary):
    request_inputs = []
    for name, arr in inputs.items():
        tensor = httpclient.InferInput(name, list(arr.shape), np_to_triton_dtype(arr.dtype))
        tensor.set_data_from_numpy(arr, binary_data=binary)
        request_inputs.append(tensor)
    requested = [httpclient.InferRequestedOutput(name, binary_data=binary) for name in outputs]
    result = gw.http.infer(model, request_inputs, model_version=version, outputs=requested)

    decoded = {}
    for name in outputs:
        out = result.get_output(name)
        assert out is not None, f"output {name!r} missing from response"
        # The client asked for a specific encoding; the server must honour it
        # (as_numpy would quietly decode either, hiding the mismatch).
        if binary:
            assert "binary_data_size" in out.get("parameters", {}), f"{name}: expected binary data, got {out}"
        else:
            assert "data" in out, f"{name}: expected JSON data, got {out}"
        decoded[name] = result.as_numpy(name)
    return decoded


def infer_http_json(gw, model, version, inputs, outputs):
    return infer_http(gw, model, version, inputs, outputs, binary=False)


def infer_http_binary(gw, model, version, inputs, outputs):
    return infer_http(gw, model, version, inputs, outputs, binary=True)


def make_grpc_inputs(inputs):
    tensors = []
    for name, arr in inputs.items():
        tensor = grpcclient.InferInput(name, list(arr.shape), np_to_triton_dtype(arr.dtype))
        # tritonclient's gRPC client always sends raw_input_contents.
        tensor.set_data_from_numpy(arr)
        tensors.append(tensor)
    return tensors


def infer_grpc_raw(gw, model, version, inputs, outputs):
    result = gw.grpc.infer(
        model,
        make_grpc_inputs(inputs),
        model_version=version,
        outputs=[grpcclient.InferRequestedOutput(name) for name in outputs],
        client_timeout=TIMEOUT_S,
    )
    # tritonclient's as_numpy only decodes raw_output_contents; a server that
    # answers with typed contents would look like empty tensors here.
    return {name: result.as_numpy(name) for name in outputs}


def decode_grpc_response(response):
    """Decode a ModelInferResponse whether it carries raw or typed contents."""
    decoded = {}
    raw = response.raw_output_contents
    assert not raw or len(raw) == len(response.outputs), "raw_output_contents does not match outputs"
    for i, out in enumerate(response.outputs):
        if out.datatype == "BYTES":
            items = deserialize_bytes_tensor(raw[i]) if raw else np.asarray(out.contents.bytes_contents, dtype=object)
            decoded[out.name] = items.reshape(tuple(out.shape))
            continue
        # Raw tensor bytes are little-endian by definition of the protocol.
        dtype = np.dtype(triton_to_np_dtype(out.datatype)).newbyteorder("<")
        if raw:
            arr = np.frombuffer(raw[i], dtype=dtype)
        else:
            arr = np.asarray(getattr(out.contents, TYPED_CONTENTS_FIELD[out.datatype]), dtype=dtype)
        decoded[out.name] = arr.astype(dtype.newbyteorder("=")).reshape(tuple(out.shape))
    return decoded


def infer_grpc_typed(gw, model, version, inputs, outputs):
    # tritonclient cannot send typed `contents`, so build the protobuf by hand:
    # other clients (and KServe's own examples) do send them.
    request = service_pb2.ModelInferRequest(model_name=model, model_version=version)
    for name, arr in inputs.items():
        datatype = np_to_triton_dtype(arr.dtype)
        tensor = request.inputs.add(name=name, datatype=datatype, shape=list(arr.shape))
        values = arr.ravel().tolist()
        if datatype == "BYTES":
            values = [v.encode("utf-8") if isinstance(v, str) else v for v in values]
        getattr(tensor.contents, TYPED_CONTENTS_FIELD[datatype]).extend(values)
    for name in outputs:
        request.outputs.add(name=name)
    response = gw.stub.ModelInfer(request, timeout=TIMEOUT_S)
    assert response.model_name == model
    return decode_grpc_response(response)


INFER = {
    "http-json": infer_http_json,
    "http-binary": infer_http_binary,
    "grpc-raw": infer_grpc_raw,
    "grpc-typed": infer_grpc_typed,
}
# The wire formats that go through tritonclient and raise its exception type.
TRITONCLIENT_INFER = ["http-json", "http-binary", "grpc-raw"]


@pytest.mark.parametrize("version", ["", MODEL_VERSION], ids=["latest", "v1"])
@pytest.mark.parametrize("protocol", list(INFER))
@pytest.mark.parametrize("model", MODEL_NAMES)
def test_infer_batched(gateway, model, protocol, version):
    """All test rows in one request."""
    ref = reference(model)
    got = INFER[protocol](gateway, model, version, ref.rows, ref.output_names)
    assert_outputs_match(model, got, ref.expected)
    for name, values in ref.pinned.items():
        assert_same(f"{name} vs test_rows.json", got[name], values)


@pytest.mark.parametrize("protocol", list(INFER))
@pytest.mark.parametrize("model", MODEL_NAMES)
def test_infer_single_rows(gateway, model, protocol):
    """Every test row as its own batch-of-one request."""
    ref = reference(model)
    for i in range(ref.n_rows):
        got = INFER[protocol](gateway, model, "", ref.batch(i, i + 1), ref.output_names)
        assert_outputs_match(model, got, ref.expected_for(i, i + 1))
        for name, values in ref.pinned.items():
            assert_same(f"row {i} {name}", got[name], values[i : i + 1])


@pytest.mark.parametrize("protocol", list(INFER))
@pytest.mark.parametrize("model", MODEL_NAMES)
def test_infer_subset_of_outputs(gateway, model, protocol):
    """Requesting one output returns just that one."""
    ref = reference(model)
    name = ref.output_names[-1]
    got = INFER[protocol](gateway, model, "", ref.rows, [name])
    assert set(got) == {name}
    assert_same(name, got[name], ref.expected[name])


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_grpc_stream_infer(gateway, model):
    """ModelStreamInfer: several requests on one stream, matched by request id."""
    ref = reference(model)
    # Some single rows plus one request carrying the whole batch.
    slices = {f"{model}-row-{i}": (i, i + 1) for i in range(4)}
    slices[f"{model}-all"] = (0, ref.n_rows)

    responses = queue.Queue()
    # A stream belongs to one client object, so use a dedicated one.
    client = grpcclient.InferenceServerClient(url=gateway.grpc_addr)
    client.start_stream(callback=lambda result, error: responses.put((result, error)))
    try:
        for request_id, (start, stop) in slices.items():
            client.async_stream_infer(
                model,
                make_grpc_inputs(ref.batch(start, stop)),
                outputs=[grpcclient.InferRequestedOutput(n) for n in ref.output_names],
                request_id=request_id,
            )
        results = {}
        for _ in slices:
            try:
                result, error = responses.get(timeout=TIMEOUT_S)
            except queue.Empty:
                pytest.fail(f"stream answered {len(results)} of {len(slices)} requests")
            assert error is None, f"stream error: {error}"
            results[result.get_response().id] = result
    finally:
        client.stop_stream()
        client.close()

    # Responses may arrive in any order; the echoed id says which is which.
    assert set(results) == set(slices)
    for request_id, (start, stop) in slices.items():
        got = {n: results[request_id].as_numpy(n) for n in ref.output_names}
        assert_outputs_match(model, got, ref.expected_for(start, stop))


# ---------------------------------------------------------------------------
# Bad requests: a clean error for the client, and the server keeps serving
# ---------------------------------------------------------------------------

def _digits_rows(n=2):
    return reference("digits").batch(0, n)


BAD_REQUESTS = {
    # id: (model, version, inputs)
    "unknown-model": lambda: ("no_such_model", "", _digits_rows()),
    "unknown-version": lambda: ("digits", "999", _digits_rows()),
    "unknown-input-name": lambda: ("digits", "", {"not_an_input": _digits_rows()["input"]}),
    "wrong-datatype": lambda: ("digits", "", {"input": _digits_rows()["input"].astype(np.float64)}),
    "wrong-shape": lambda: ("digits", "", {"input": _digits_rows()["input"][:, :63].copy()}),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
@pytest.mark.parametrize("protocol", TRITONCLIENT_INFER)
def test_bad_request_raises_and_server_survives(gateway, protocol, case):
    model, version, inputs = BAD_REQUESTS[case]()
    with pytest.raises(InferenceServerException):
        INFER[protocol](gateway, model, version, inputs, reference("digits").output_names)

    # The failure must not have taken anything down.
    assert gateway.http.is_server_live()
    assert gateway.grpc.is_server_live(client_timeout=TIMEOUT_S)
    ref = reference("digits")
    got = INFER[protocol](gateway, "digits", "", ref.rows, ref.output_names)
    assert_outputs_match("digits", got, ref.expected)


# ---------------------------------------------------------------------------
# Triton's statistics extension, read with tritonclient's own call
# ---------------------------------------------------------------------------

def _statistics(gw, protocol, model):
    """One model's statistics as a dict in Triton's JSON shape, over either protocol."""
    if protocol == "http":
        answer = gw.http.get_inference_statistics(model)
    else:
        answer = gw.grpc.get_inference_statistics(model, as_json=True, client_timeout=TIMEOUT_S)
    (stats,) = answer["model_stats"]
    # gRPC's JSON renders uint64 as strings and leaves zeros out.
    number = lambda d, k: int(d.get(k, 0))
    infer = stats.get("inference_stats", {})
    return {
        "name": stats["name"],
        "version": stats["version"],
        "last_inference": number(stats, "last_inference"),
        "inference_count": number(stats, "inference_count"),
        "execution_count": number(stats, "execution_count"),
        **{f"{k}_count": number(infer.get(k, {}), "count") for k in ("success", "fail", "queue", "compute_infer", "cache_hit", "cache_miss")},
        "compute_ns": number(infer.get("compute_infer", {}), "ns"),
        "batch_runs": sum(number(b.get("compute_infer", {}), "count") for b in stats.get("batch_stats", [])),
    }


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_inference_statistics_move_with_the_traffic(gateway, protocol):
    """tritonclient's get_inference_statistics, as a program written for Triton calls it."""
    before = _statistics(gateway, protocol, "digits")
    assert (before["name"], before["version"]) == ("digits", MODEL_VERSION)
    rng = np.random.default_rng()
    ref = reference("digits")
    # Fresh rows (misses), then the last one again (a hit), then a request that fails.
    sent = 5
    for _ in range(sent):
        rows = {name: rng.random(arr[:2].shape, dtype=np.float32) * 16 for name, arr in ref.rows.items()}
        infer_http_json(gateway, "digits", "", rows, ref.output_names)
    infer_http_json(gateway, "digits", "", rows, ref.output_names)
    bad = httpclient.InferInput(ref.inputs[0].name, [1, 3], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(InferenceServerException):
        gateway.http.infer("digits", [bad])
    after = _statistics(gateway, protocol, "digits")
    moved = {k: after[k] - before[k] for k in after if k.endswith("_count") or k in ("compute_ns", "batch_runs")}
    assert moved["success_count"] == sent + 1, moved
    assert moved["fail_count"] == 1, moved
    assert moved["cache_hit_count"] == 1, moved
    assert moved["cache_miss_count"] == sent, moved
    assert moved["queue_count"] == sent and moved["compute_infer_count"] == sent, moved
    # Two rows each, in batches of their own or shared with nothing else running.
    assert moved["inference_count"] == 2 * sent, moved
    assert 1 <= moved["execution_count"] <= sent and moved["batch_runs"] == moved["execution_count"], moved
    assert moved["compute_ns"] > 0, moved
    assert after["last_inference"] >= before["last_inference"] and after["last_inference"] > 1.7e12, after


def test_statistics_of_every_model_and_of_an_unknown_one(gateway):
    every = gateway.http.get_inference_statistics()
    names = {m["name"] for m in every["model_stats"]}
    assert {"digits", "int_scorer"} <= names, names
    for client in (gateway.http, gateway.grpc):
        with pytest.raises(InferenceServerException) as raised:
            client.get_inference_statistics("no_such_model")
        assert "no_such_model" in str(raised.value)
    assert "statistics" in gateway.http.get_server_metadata()["extensions"]


# ---------------------------------------------------------------------------
# Triton's other extensions are not part of the protocol we serve
# ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    "call",
    [
        lambda client: client.get_model_config("digits"),
        lambda client: client.get_model_repository_index(),
    ],
    ids=["model_config", "repository_index"],
)
def test_grpc_triton_extensions_answer_unimplemented(gateway, call):
    with pytest.raises(InferenceServerException) as raised:
        call(gateway.grpc)
    assert "UNIMPLEMENTED" in str(raised.value.status())
    assert gateway.grpc.is_server_live()


def test_the_readme_python_examples_run_as_written(capsys):
    """A new user pastes the README's tritonclient snippets; both must run against the gateway."""
    readme = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = readme.split("```python\n")[1:]
    snippets = [block.split("```", 1)[0] for block in blocks]
    assert len(snippets) >= 2, "the README shows an HTTP and a gRPC example"
    http, grpc_address = os.environ["TOLLGATE_HTTP"], os.environ["TOLLGATE_GRPC"]
    scope: dict = {}
    for snippet in snippets:
        code = snippet.replace("127.0.0.1:8000", http).replace("127.0.0.1:8001", grpc_address)
        exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - our own README
    printed = capsys.readouterr().out.split("\n")
    assert any(line.endswith(("miss", "hit", "coalesced")) for line in printed), printed
