"""The shipped Grafana board and Prometheus rules against real Prometheus tools: every query of
deploy/grafana/tollgate.json is valid PromQL and returns data from a real Prometheus scraping a
gateway under traffic from two tenants, and deploy/prometheus/tollgate-rules.yml passes
`promtool check rules` and its own unit tests (`promtool test rules`)."""

import json
import pathlib
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BINARY = REPO / "target" / "debug" / "tollgate"
BOARD = REPO / "deploy" / "grafana" / "tollgate.json"
RULES = REPO / "deploy" / "prometheus"
KEYS = {"alpha": "alpha-key-for-the-board", "beta": "beta-key-for-the-board"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, process, what: str):
    for _ in range(300):
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            assert process.poll() is None, f"{what} exited"
            time.sleep(0.2)
    pytest.fail(f"{what} did not answer at {url}")


def hash_key(key: str) -> str:
    done = subprocess.run([str(BINARY), "hash-key", key], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def infer(base: str, tenant: str, value: float, timeout_us=None):
    parameters = {"timeout": timeout_us} if timeout_us else {}
    body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64],
                                   "data": [value] * 64}], "parameters": parameters}).encode()
    request = urllib.request.Request(f"{base}/v2/models/digits/infer", data=body, method="POST",
                                     headers={"Authorization": f"Bearer {KEYS[tenant]}",
                                              "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            reply.read()
    except urllib.error.HTTPError as error:
        error.read()


@pytest.fixture(scope="module")
def scraped():
    """A gateway of two tenants with budgets, scraped every second by a real Prometheus."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed: `make test` installs it from apt")
    with tempfile.TemporaryDirectory() as tmp:
        tenants = "".join(
            f'[[tenants]]\nname = "{name}"\napi_key_blake3 = "{hash_key(key)}"\nteam = "{name}-team"\n'
            'budget_usd = 1000.0\nbudget_period = "day"\n'
            for name, key in KEYS.items()
        )
        config = pathlib.Path(tmp) / "gateway.toml"
        config.write_text(
            f'[ledger]\npath = "{tmp}/ledger.sqlite"\n[metering]\nidle_interval_seconds = 1\n{tenants}'
            f'[[models]]\nname = "digits"\npath = "{REPO}/models/digits/1/model.onnx"\n'
            "max_batch_size = 8\nmax_queue_delay_us = 500\nprice_per_hour = 3.6\n"
        )
        http = free_port()
        gateway = subprocess.Popen(
            [str(BINARY), "serve", "--config", str(config), "--http-addr", f"127.0.0.1:{http}",
             "--grpc-addr", f"127.0.0.1:{free_port()}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        prometheus = None
        try:
            base = f"http://127.0.0.1:{http}"
            wait_for(f"{base}/v2/health/ready", gateway, "the gateway")
            (pathlib.Path(tmp) / "prometheus.yml").write_text(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: tollgate\n"
                f"    static_configs:\n      - targets: ['127.0.0.1:{http}']\n")
            port = free_port()
            prometheus = subprocess.Popen(
                [binary, f"--config.file={tmp}/prometheus.yml", f"--storage.tsdb.path={tmp}/data",
                 f"--web.listen-address=127.0.0.1:{port}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_for(f"http://127.0.0.1:{port}/-/ready", prometheus, "Prometheus")
            yield base, f"http://127.0.0.1:{port}"
        finally:
            for process in (prometheus, gateway):
                if process is not None:
                    process.terminate()
                    process.wait(timeout=30)


def board_queries():
    board = json.loads(BOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in board["panels"] for target in panel["targets"]]


def test_the_board_has_its_variables_and_panels():
    board = json.loads(BOARD.read_text())
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert {"model", "tenant"} <= set(variables)
    assert len(board["panels"]) >= 8
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_every_board_query_returns_data_from_a_gateway_under_traffic(scraped):
    base, prometheus = scraped
    stop = threading.Event()

    def traffic():
        value = 0.0
        while not stop.is_set():
            for tenant in KEYS:
                infer(base, tenant, value % 7)  # repeats, so hits and misses both
                value += 1
            infer(base, "alpha", 99.0, timeout_us=1)  # refused: expired in the queue
            time.sleep(0.02)

    worker = threading.Thread(target=traffic)
    worker.start()
    pending = dict(board_queries())
    try:
        deadline = time.time() + 90
        while pending and time.time() < deadline:
            time.sleep(1)
            for title, expr in list(pending.items()):
                promql = (expr.replace("$__rate_interval", "15s").replace('"$model"', '".*"')
                          .replace('"$tenant"', '".*"'))
                url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
                with urllib.request.urlopen(url, timeout=5) as reply:
                    answer = json.load(reply)
                assert answer["status"] == "success", (title, promql, answer)
                if answer["data"]["result"]:
                    del pending[title]
    finally:
        stop.set()
        worker.join()
    assert not pending, f"board queries without data: {sorted(pending)}"


def test_the_alert_rules_check_and_pass_their_unit_tests():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: `make test` installs it with prometheus from apt")
    checked = subprocess.run([promtool, "check", "rules", "tollgate-rules.yml"], cwd=RULES,
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([promtool, "test", "rules", "tollgate-rules.test.yml"], cwd=RULES,
                            capture_output=True, text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    alerts = {line.split(":", 1)[1].strip() for line in (RULES / "tollgate-rules.yml").read_text().splitlines()
              if line.strip().startswith("- alert:")}
    tested_alerts = {line.split(":", 1)[1].strip() for line in (RULES / "tollgate-rules.test.yml").read_text().splitlines()
                     if line.strip().startswith("alertname:")}
    assert alerts == tested_alerts, f"alerts without a unit test: {sorted(alerts - tested_alerts)}"
