"""The load-test harness against the running gateway: its counts agree with the gateway's own
metrics over all three protocols, its hit ratio under a Zipf workload matches /metrics, and in
open loop it shows latency rising once the offered rate exceeds capacity (coordinated omission
would hide that)."""

import json
import os
import pathlib
import subprocess
import tempfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
HARNESS = os.environ.get("TOLLGATE_LOADTEST", str(REPO / "target" / "debug" / "tollgate-loadtest"))
HTTP = os.environ.get("TOLLGATE_HTTP", "")
GRPC = os.environ.get("TOLLGATE_GRPC", "")


def run(*args: str) -> dict:
    if not HTTP or not GRPC:
        pytest.fail("TOLLGATE_HTTP and TOLLGATE_GRPC must be set: run these tests through `make test`")
    with tempfile.TemporaryDirectory() as tmp:
        report = pathlib.Path(tmp) / "report.json"
        completed = subprocess.run(
            [HARNESS, *args, "--json", str(report), "--no-progress",
             "--metrics-url", f"http://{HTTP}/metrics"],
            capture_output=True, text=True, timeout=120,
        )
        assert completed.returncode == 0, completed.stderr + completed.stdout
        return json.loads(report.read_text())


@pytest.mark.parametrize("protocol", ["http", "http-binary", "grpc"])
def test_request_counts_agree_with_the_gateway(protocol):
    target = GRPC if protocol == "grpc" else HTTP
    report = run("--target", target, "--protocol", protocol, "--model", "digits",
                 "--concurrency", "4", "--requests", "300", "--distinct", "40", "--seed", "11")
    assert report["ok"] == 300 and report["errors_total"] == 0, report["errors"]
    server = report["server_metrics"]
    assert server["requests_total"] == 300
    client_cache = report["cache"]
    for status in ("hit", "miss", "coalesced"):
        assert server["cache_requests_by_status"].get(status, 0) == client_cache[status], status


def test_zipf_hit_ratio_matches_the_gateway_metrics():
    report = run("--target", HTTP, "--protocol", "http-binary", "--model", "digits",
                 "--concurrency", "8", "--requests", "4000", "--distinct", "10000",
                 "--zipf", "1.1", "--seed", "5")
    by_status = report["server_metrics"]["cache_requests_by_status"]
    looked_up = sum(by_status.get(s, 0) for s in ("hit", "miss", "coalesced"))
    server_ratio = by_status.get("hit", 0) / looked_up
    assert 0.2 < report["cache"]["hit_ratio"] < 0.95, "Zipf(1.1) over 10,000 should repeat often"
    assert abs(report["cache"]["hit_ratio"] - server_ratio) <= 0.01


def test_open_loop_latency_rises_past_capacity():
    # The slow model serves about 300 rows/s; 40 req/s is easy, 900 req/s is not.
    calm = run("--target", GRPC, "--protocol", "grpc", "--model", "slow",
               "--rate", "40", "--arrivals", "constant", "--duration", "2s", "--seed", "3")
    overload = run("--target", GRPC, "--protocol", "grpc", "--model", "slow",
                   "--rate", "900", "--arrivals", "constant", "--duration", "2s", "--seed", "3",
                   "--timeout", "30s")
    assert calm["errors_total"] == 0 and overload["errors_total"] == 0, (calm["errors"], overload["errors"])
    calm_p99, loaded_p99 = calm["latency_ms"]["p99"], overload["latency_ms"]["p99"]
    # Measured from the intended send time, the backlog shows up as latency that grows with it.
    assert loaded_p99 > 10 * calm_p99 and loaded_p99 > 300, (calm_p99, loaded_p99)
    assert overload["requests_per_s"] < 900 * 0.8


def test_warm_up_stays_out_of_the_server_counts():
    # The warm-up drains before the server's counters are read: both sides count the same.
    report = run("--target", HTTP, "--model", "digits", "--concurrency", "4",
                 "--warmup", "1s", "--duration", "1s", "--distinct", "20", "--seed", "21")
    measured = report["ok"] + report["errors_total"]
    assert report["server_metrics"]["requests_total"] == measured, report


@pytest.fixture(scope="module")
def gateway_with_auth():
    """A second gateway, as a platform team runs it: every call needs a tenant's key."""
    import socket
    import time
    import urllib.request

    binary = REPO / "target" / "debug" / "tollgate"
    key = "loadtest-key"
    digest = subprocess.run([str(binary), "hash-key", key], capture_output=True, text=True,
                            check=True).stdout.strip()

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    with tempfile.TemporaryDirectory() as tmp:
        config = pathlib.Path(tmp) / "auth.toml"
        config.write_text(
            f'[ledger]\npath = "{tmp}/ledger.sqlite"\n'
            "[auth]\nrequired = true\n"
            f'[[tenants]]\nname = "bench"\napi_key_blake3 = "{digest}"\n'
            f'[[models]]\nname = "digits"\npath = "{REPO}/models/digits/1/model.onnx"\n'
            "max_batch_size = 8\n"
        )
        http, grpc = free_port(), free_port()
        process = subprocess.Popen(
            [str(binary), "serve", "--config", str(config), "--http-addr", f"127.0.0.1:{http}",
             "--grpc-addr", f"127.0.0.1:{grpc}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(150):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{http}/v2/health/ready", timeout=1)
                    break
                except OSError:
                    time.sleep(0.2)
            yield f"127.0.0.1:{http}", f"127.0.0.1:{grpc}", key
        finally:
            process.terminate()
            process.wait(timeout=30)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_the_harness_authenticates_and_fails_loudly_without_a_key(gateway_with_auth, protocol):
    http, grpc, key = gateway_with_auth
    target = grpc if protocol == "grpc" else http
    common = [HARNESS, "--target", target, "--protocol", protocol, "--model", "digits",
              "--concurrency", "2", "--requests", "50", "--no-progress"]
    refused = subprocess.run(common, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert "--api-key" in refused.stderr, refused.stderr
    served = subprocess.run(common + ["--api-key", key], capture_output=True, text=True,
                            timeout=120)
    assert served.returncode == 0, served.stdout + served.stderr
    assert "50 ok, 0 errors" in served.stdout, served.stdout
    assert "per 1,000 requests" in served.stdout and "e-" in served.stdout, served.stdout


def test_a_deferred_job_is_submitted_and_waited_for():
    if not HTTP:
        pytest.fail("TOLLGATE_HTTP must be set: run these tests through `make test`")
    completed = subprocess.run(
        [HARNESS, "--target", HTTP, "--model", "digits", "--job", "300", "--distinct", "30",
         "--seed", "3", "--duration", "60s"],
        capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr + completed.stdout
    assert "completed" in completed.stdout
    assert "300 completed, 0 failed of 300" in completed.stdout, completed.stdout
