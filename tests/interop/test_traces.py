"""Traces across gateways: a request with a W3C `traceparent` (HTTP header or gRPC metadata,
sent by the real tritonclient) to a model served by an upstream reaches that upstream in the
same trace, as the child of the gateway's own span. The upstream here is a second Tollgate
process whose access log says what it received. One front gateway exports its spans over OTLP
to a collector run by this test (the OpenTelemetry protocol's own gRPC service); the other
exports nothing and still passes the trace on."""

import json
import pathlib
import socket
import subprocess
import tempfile
import threading
import time
from concurrent import futures

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

REPO = pathlib.Path(__file__).resolve().parents[2]
BINARY = REPO / "target" / "debug" / "tollgate"
DIGITS = REPO / "models" / "digits" / "1" / "model.onnx"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every span it is sent, by trace id."""

    def __init__(self):
        self.spans = []
        self.lock = threading.Lock()

    def Export(self, request, context):
        with self.lock:
            for resource in request.resource_spans:
                service = {a.key: a.value.string_value for a in resource.resource.attributes}
                for scope in resource.scope_spans:
                    for span in scope.spans:
                        self.spans.append((service.get("service.name"), span))
        return trace_service_pb2.ExportTraceServiceResponse()

    def of_trace(self, trace_id: str):
        with self.lock:
            return [(service, span) for service, span in self.spans if span.trace_id.hex() == trace_id]


class Gateway:
    def __init__(self, tmp: pathlib.Path, name: str, body: str):
        http, grpc_port = free_port(), free_port()
        config = tmp / f"{name}.toml"
        config.write_text(f'[ledger]\npath = "{tmp}/{name}.sqlite"\n[telemetry]\naccess_log_sample_ratio = 1.0\n{body}')
        self.log = tmp / f"{name}.log"
        self.http = f"127.0.0.1:{http}"
        self.grpc = f"127.0.0.1:{grpc_port}"
        self.process = subprocess.Popen(
            [str(BINARY), "serve", "--config", str(config), "--http-addr", self.http,
             "--grpc-addr", self.grpc, "--log-format", "json"],
            stdout=subprocess.DEVNULL, stderr=self.log.open("w"))
        client = httpclient.InferenceServerClient(self.http)
        for _ in range(300):
            try:
                if client.is_server_ready():
                    return
            except Exception:
                pass
            assert self.process.poll() is None, self.log.read_text()
            time.sleep(0.1)
        pytest.fail(f"{name} did not start: {self.log.read_text()}")

    def access(self):
        lines = [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("message") == "access"]

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def fleet():
    collector = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    otlp_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    gateways = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        try:
            upstream = Gateway(tmp, "upstream", f'[[models]]\nname = "digits"\npath = "{DIGITS}"\nmax_batch_size = 8\ncache = false\n')
            gateways.append(upstream)
            models = (f'[[models]]\nname = "by_http"\nupstream_model = "digits"\nupstream = "http://{upstream.http}"\ncache = false\n'
                      f'[[models]]\nname = "by_grpc"\nupstream_model = "digits"\nupstream = "grpc://{upstream.grpc}"\ncache = false\n')
            exporting = Gateway(tmp, "exporting", f'otlp_endpoint = "http://127.0.0.1:{otlp_port}"\nservice_name = "front"\n{models}')
            gateways.append(exporting)
            plain = Gateway(tmp, "plain", models)
            gateways.append(plain)
            yield {"upstream": upstream, "exporting": exporting, "plain": plain, "collector": collector}
        finally:
            for gateway in gateways:
                gateway.stop()
            server.stop(grace=None)


def ask(front: Gateway, protocol: str, model: str, headers: dict):
    data = np.full((1, 64), 7.0, dtype=np.float32)
    if protocol == "http":
        client = httpclient.InferenceServerClient(front.http)
        tensor = httpclient.InferInput("input", [1, 64], "FP32")
    else:
        client = grpcclient.InferenceServerClient(front.grpc)
        tensor = grpcclient.InferInput("input", [1, 64], "FP32")
    tensor.set_data_from_numpy(data)
    result = client.infer(model, [tensor], headers=headers)
    assert result.as_numpy("label") is not None


def line_of(gateway: Gateway, trace_id: str, model: str):
    for _ in range(50):
        found = [line for line in gateway.access() if line["trace_id"] == trace_id and line["model"] == model]
        if found:
            return found[-1]
        time.sleep(0.1)
    pytest.fail(f"no access line for trace {trace_id} ({model}) in {gateway.log}")


CASES = [(front, protocol, model) for front in ("plain", "exporting")
         for protocol in ("http", "grpc") for model in ("by_http", "by_grpc")]


@pytest.mark.parametrize("front,protocol,model", CASES)
def test_the_upstream_sees_the_callers_trace_below_the_gateways_span(fleet, front, protocol, model):
    gateway, upstream = fleet[front], fleet["upstream"]
    index = CASES.index((front, protocol, model))
    trace_id = f"{index + 1:02x}" + "4bf92f3577b34da6a3ce929d0e0e47"
    caller_span = "00f067aa0ba902b7"
    ask(gateway, protocol, model, {"traceparent": f"00-{trace_id}-{caller_span}-01", "tracestate": "vendor=kept"})

    own = line_of(gateway, trace_id, model)
    assert own["parent_id"] == caller_span
    assert own["span_id"] not in ("", caller_span)
    assert own["request_id"] and own["tenant"] == "anonymous"
    seen = line_of(upstream, trace_id, "digits")
    assert seen["protocol"] == ("http" if model == "by_http" else "grpc")
    if front == "plain":
        # Nothing is exported: the upstream's parent is the gateway's request span.
        assert seen["parent_id"] == own["span_id"]
        return
    # Exported: the request span (child of the caller's) and, below it, the span of the call
    # the upstream names as its parent.
    collector = fleet["collector"]
    spans = []
    for _ in range(100):
        spans = collector.of_trace(trace_id)
        if {s.name for _, s in spans} >= {"request", "batch", "upstream"}:
            break
        time.sleep(0.1)
    named = {s.name: s for _, s in spans}
    assert {"request", "batch", "upstream"} <= set(named), [s.name for _, s in spans]
    assert {service for service, _ in spans} == {"front"}
    request, batch, call = named["request"], named["batch"], named["upstream"]
    assert request.parent_span_id.hex() == caller_span
    assert request.span_id.hex() == own["span_id"]
    assert batch.parent_span_id == request.span_id
    assert call.parent_span_id == batch.span_id
    assert seen["parent_id"] == call.span_id.hex()
    attributes = {a.key: a.value.string_value for a in request.attributes}
    assert attributes["request_id"] == own["request_id"]
    assert attributes["model"] == model and attributes["tenant"] == "anonymous"


def test_a_request_without_a_trace_starts_one_that_the_upstream_continues(fleet):
    before = {line["trace_id"] for line in fleet["plain"].access()}
    ask(fleet["plain"], "http", "by_http", {})
    ask(fleet["plain"], "grpc", "by_grpc", {"traceparent": "not a trace header"})
    for model in ("by_http", "by_grpc"):
        new = [line for line in fleet["plain"].access() if line["trace_id"] not in before and line["model"] == model]
        assert len(new) == 1, new
        own = new[0]
        assert len(own["trace_id"]) == 32 and own["trace_id"] != "0" * 32 and own["parent_id"] == ""
        assert line_of(fleet["upstream"], own["trace_id"], "digits")["parent_id"] == own["span_id"]
