"""BYTES (string) tensors with the real tritonclient: the bundled `labels` model (words to ids
and names) over HTTP JSON, the binary extension and gRPC, a repeat served from the cache
whatever wire it comes over, a clear error for bytes an ONNX string cannot hold, and the same
model reached through a second gateway that sends it upstream over HTTP and over gRPC."""

import os
import pathlib
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

REPO = pathlib.Path(__file__).resolve().parents[2]
BINARY = REPO / "target" / "debug" / "tollgate"
TIMEOUT_S = 30.0

IDS = {"cat": 0, "kitten": 0, "dog": 1, "puppy": 1, "café": 2, "🦀": 3}
NAMES = {0: "feline", 1: "canine", 2: "coffee", 3: "crustacean", -1: "unknown"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fresh_words():
    """Known words and one never sent before, so the first request is a miss everywhere."""
    return np.array(["dog", "café", f"new-{uuid.uuid4().hex}", "🦀"], dtype=object)


def text(values):
    return [v.decode("utf-8") if isinstance(v, bytes) else v for v in values.tolist()]


def check(words, ids, names):
    assert ids.tolist() == [IDS.get(w, -1) for w in words.tolist()]
    assert text(names) == [NAMES[IDS.get(w, -1)] for w in words.tolist()]


def infer_http(client, model, words, binary):
    tensor = httpclient.InferInput("text", [len(words)], "BYTES")
    tensor.set_data_from_numpy(words, binary_data=binary)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("id", "name")]
    result = client.infer(model, [tensor], outputs=outputs)
    name = result.get_output("name")
    assert ("binary_data_size" in name.get("parameters", {})) == binary, name
    check(words, result.as_numpy("id"), result.as_numpy("name"))
    return result.get_response()["parameters"]["cache"]


def infer_grpc(client, model, words):
    tensor = grpcclient.InferInput("text", [len(words)], "BYTES")
    tensor.set_data_from_numpy(words)
    result = client.infer(model, [tensor], client_timeout=TIMEOUT_S)
    check(words, result.as_numpy("id"), result.as_numpy("name"))
    return result.get_response().parameters["cache"].string_param


def clients(http_addr, grpc_addr):
    return (
        httpclient.InferenceServerClient(url=http_addr, network_timeout=TIMEOUT_S),
        grpcclient.InferenceServerClient(url=grpc_addr),
    )


@pytest.fixture(scope="module")
def gateway():
    http, grpc = clients(os.environ["TOLLGATE_HTTP"], os.environ["TOLLGATE_GRPC"])
    yield http, grpc
    http.close()
    grpc.close()


@pytest.fixture(scope="module")
def front():
    """A second gateway whose models are the interop gateway's `labels`, over HTTP and gRPC."""
    with tempfile.TemporaryDirectory() as tmp:
        config = pathlib.Path(tmp) / "front.toml"
        config.write_text(
            f'[ledger]\npath = "{tmp}/ledger.sqlite"\n'
            '[[models]]\nname = "labels_http"\nupstream_model = "labels"\n'
            f'upstream = "http://{os.environ["TOLLGATE_HTTP"]}"\n'
            '[[models]]\nname = "labels_grpc"\nupstream_model = "labels"\n'
            f'upstream = "grpc://{os.environ["TOLLGATE_GRPC"]}"\n'
        )
        http, grpc = free_port(), free_port()
        process = subprocess.Popen(
            [str(BINARY), "serve", "--config", str(config), "--http-addr", f"127.0.0.1:{http}",
             "--grpc-addr", f"127.0.0.1:{grpc}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(150):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=1)
                    break
                except OSError:
                    assert process.poll() is None, "the front gateway exited"
                    time.sleep(0.2)
            else:
                pytest.fail("the front gateway did not become ready")
            http_client, grpc_client = clients(f"127.0.0.1:{http}", f"127.0.0.1:{grpc}")
            yield http_client, grpc_client
            http_client.close()
            grpc_client.close()
        finally:
            process.terminate()
            process.wait(timeout=30)


def test_a_string_request_repeats_from_the_cache_over_every_wire(gateway):
    http, grpc = gateway
    words = fresh_words()
    assert infer_http(http, "labels", words, binary=False) == "miss"
    # The same words are the same bytes, however they travel: each is a hit.
    assert infer_http(http, "labels", words, binary=True) == "hit"
    assert infer_grpc(grpc, "labels", words) == "hit"
    assert infer_http(http, "labels", words, binary=False) == "hit"


@pytest.mark.parametrize("model", ["labels_http", "labels_grpc"])
def test_strings_pass_through_an_upstream(front, model):
    http, grpc = front
    assert http.get_model_metadata(model)["inputs"][0]["datatype"] == "BYTES"
    words = fresh_words()
    assert infer_grpc(grpc, model, words) == "miss"
    assert infer_http(http, model, words, binary=True) == "hit"
    other = fresh_words()
    assert infer_http(http, model, other, binary=False) == "miss"
    assert infer_grpc(grpc, model, other) == "hit"


def test_bytes_an_onnx_string_cannot_hold_are_refused(gateway):
    http, grpc = gateway
    words = np.array([b"dog", b"\xff\xfe"], dtype=object)
    tensor = httpclient.InferInput("text", [2], "BYTES")
    tensor.set_data_from_numpy(words, binary_data=True)
    with pytest.raises(InferenceServerException) as raised:
        http.infer("labels", [tensor])
    assert "element 1 is not UTF-8" in str(raised.value)
    tensor = grpcclient.InferInput("text", [2], "BYTES")
    tensor.set_data_from_numpy(np.array([b"a\x00b", b"ok"], dtype=object))
    with pytest.raises(InferenceServerException) as raised:
        grpc.infer("labels", [tensor], client_timeout=TIMEOUT_S)
    assert "INVALID_ARGUMENT" in str(raised.value.status())
    assert "element 0 holds a NUL byte" in str(raised.value)
    # The gateway goes on serving.
    assert infer_http(http, "labels", fresh_words(), binary=False) == "miss"
