"""A real Prometheus server scrapes the running gateway's /metrics and can query its series.

This is what ops teams do with Tollgate; a text-format mistake that a hand-written parser would
forgive makes Prometheus drop the scrape, and this test catches that.
"""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest
import tritonclient.http as httpclient

GATEWAY = os.environ.get("TOLLGATE_HTTP", "")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def query(base: str, expression: str):
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    with urllib.request.urlopen(url, timeout=5) as response:
        payload = json.load(response)
    assert payload["status"] == "success", payload
    return payload["data"]["result"]


@pytest.fixture(scope="module")
def prometheus():
    if not GATEWAY:
        pytest.fail("TOLLGATE_HTTP is not set: run these tests through `make test`")
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed: `make test` installs it from apt")
    workdir = tempfile.mkdtemp(prefix="tollgate-prometheus-")
    config = os.path.join(workdir, "prometheus.yml")
    with open(config, "w") as f:
        f.write(
            "global:\n  scrape_interval: 1s\n"
            "scrape_configs:\n"
            "  - job_name: tollgate\n"
            f"    static_configs:\n      - targets: ['{GATEWAY}']\n"
        )
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir}/data",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)


def test_prometheus_scrapes_request_counts_and_histograms(prometheus):
    client = httpclient.InferenceServerClient(GATEWAY)
    rows = np.full((2, 64), 3.0, dtype=np.float32)
    tensor = httpclient.InferInput("input", rows.shape, "FP32")
    tensor.set_data_from_numpy(rows)
    client.infer("digits", [tensor])

    deadline = time.time() + 60
    requests, healthy = [], []
    while time.time() < deadline:
        try:
            healthy = query(prometheus, 'up{job="tollgate"} == 1')
            requests = query(prometheus, 'sum(tollgate_requests_total{model="digits"})')
        except OSError:
            pass  # Prometheus is still starting.
        if healthy and requests and float(requests[0]["value"][1]) > 0:
            break
        time.sleep(0.5)
    assert healthy, "Prometheus never scraped the gateway successfully"
    assert requests and float(requests[0]["value"][1]) > 0
    buckets = query(prometheus, 'tollgate_request_duration_seconds_bucket{model="digits",le="+Inf"}')
    assert buckets, "the latency histogram is not visible to Prometheus"
    batches = query(prometheus, "tollgate_batch_size_count")
    assert batches, "the batch-size histogram is not visible to Prometheus"


def test_promtool_finds_nothing_to_lint_in_the_live_exposition():
    """Ops teams lint what they scrape; every series needs HELP, counters `_total`, base units."""
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not installed: `make test` installs it with prometheus from apt")
    client = httpclient.InferenceServerClient(GATEWAY)
    rows = np.full((1, 64), 5.0, dtype=np.float32)
    tensor = httpclient.InferInput("input", rows.shape, "FP32")
    tensor.set_data_from_numpy(rows)
    client.infer("digits", [tensor])  # a miss (or a hit of an earlier test): cost or saved
    client.infer("digits", [tensor])  # a hit
    with pytest.raises(Exception):
        client.infer("nope", [tensor])  # an error series
    with urllib.request.urlopen(f"http://{GATEWAY}/metrics", timeout=5) as response:
        exposition = response.read()
    assert b"tollgate_cost_usd_total" in exposition
    assert b"tollgate_device_busy_seconds_total" in exposition
    lint = subprocess.run(
        [binary, "check", "metrics"], input=exposition, capture_output=True, timeout=30
    )
    report = (lint.stdout + lint.stderr).decode()
    assert lint.returncode == 0 and report.strip() == "", report
