"""The built-in dashboard in a real headless Chromium (Debian's, driven by Playwright): it asks
for the admin token, then shows both tenants of a gateway that served them, its totals equal
`/v1/costs` over the same range, and the page logs no console error. A screenshot is kept under
target/test-artifacts/. A gateway without an admin token serves it open and says so at start."""

import json
import math
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from playwright.sync_api import sync_playwright

REPO = pathlib.Path(__file__).resolve().parents[2]
BINARY = REPO / "target" / "debug" / "tollgate"
ARTIFACTS = REPO / "target" / "test-artifacts"
ADMIN = "admin-token-of-the-dashboard-test"
KEYS = {"alpha": "alpha-key-of-the-dashboard", "beta": "beta-key-of-the-dashboard"}
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# As the project's other browser checks run it: no sandbox (CI runs as root), and nothing that
# reaches for the network by itself.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hash_key(key: str) -> str:
    done = subprocess.run([str(BINARY), "hash-key", key], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def wait_ready(base: str, process):
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{base}/v2/health/ready", timeout=1)
            return
        except OSError:
            assert process.poll() is None, "the gateway exited"
            time.sleep(0.2)
    pytest.fail("the gateway did not start")


def call(base: str, path: str, token: str, body=None):
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, headers=headers,
                                     method="POST" if data else "GET")
    with urllib.request.urlopen(request, timeout=10) as reply:
        return json.loads(reply.read())


def infer(base: str, tenant: str, value: float):
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 64], "data": [value] * 64}]}
    call(base, "/v2/models/digits/infer", KEYS[tenant], body)


class Gateway:
    def __init__(self, tmp: str, admin: bool):
        tenants = "".join(
            f'[[tenants]]\nname = "{name}"\napi_key_blake3 = "{hash_key(key)}"\nteam = "{name}-team"\n'
            f'budget_usd = {budget}\nbudget_period = "day"\n'
            for (name, key), budget in zip(KEYS.items(), (1.0, 0.5)))
        admin_line = f'admin_token_blake3 = "{hash_key(ADMIN)}"\n' if admin else ""
        config = pathlib.Path(tmp) / "gateway.toml"
        # Idle time is written hourly here, so that no idle record lands while the page and the
        # test read the same range.
        config.write_text(
            f"[server]\n{admin_line}[ledger]\npath = \"{tmp}/ledger.sqlite\"\n"
            f"[metering]\nidle_interval_seconds = 3600\n{tenants}"
            f'[[models]]\nname = "digits"\npath = "{REPO}/models/digits/1/model.onnx"\n'
            "max_batch_size = 8\nmax_queue_delay_us = 500\nprice_per_hour = 3.6\n")
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.log = pathlib.Path(tmp) / "gateway.log"
        self.process = subprocess.Popen(
            [str(BINARY), "serve", "--config", str(config), "--http-addr", f"127.0.0.1:{port}",
             "--grpc-addr", f"127.0.0.1:{free_port()}"],
            stdout=subprocess.DEVNULL, stderr=self.log.open("w"))
        wait_ready(self.base, self.process)

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    if not shutil.which(CHROMIUM) and not pathlib.Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs chromium from apt")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def served():
    """A gateway with an admin token that served two tenants, some requests repeated."""
    with tempfile.TemporaryDirectory() as tmp:
        gateway = Gateway(tmp, admin=True)
        try:
            for i in range(24):
                infer(gateway.base, "alpha", float(i % 8))
            for i in range(10):
                infer(gateway.base, "beta", 100.0 + i)
            # Records reach the ledger within its flush window.
            time.sleep(1.0)
            yield gateway
        finally:
            gateway.stop()


def open_page(browser, base: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    problems = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.on("request", lambda r: None if r.url.startswith(base) or r.url.startswith("data:")
            else problems.append(f"request to another host: {r.url}"))
    page.goto(f"{base}/dashboard")
    return page, problems


def refreshed(page, after: int = 0):
    page.wait_for_function(f"() => Number(document.body.dataset.refreshed || 0) > {after}", timeout=15000)
    return int(page.evaluate("document.body.dataset.refreshed"))


def test_the_dashboard_asks_for_the_token_then_shows_both_tenants_with_the_ledgers_totals(browser, served):
    page, problems = open_page(browser, served.base)
    page.wait_for_selector("#login:not([hidden])")
    assert page.is_hidden("#board")

    page.fill("#token", ADMIN)
    page.click("#login-form button")
    refreshed(page)
    assert page.is_visible("#board")
    # The token lives in this tab's session storage, never in the address.
    assert page.evaluate("sessionStorage.getItem('tollgate.admin-token')") == ADMIN
    assert ADMIN not in page.url

    tenants = page.inner_text("#tenants tbody")
    assert "alpha" in tenants and "beta" in tenants, tenants
    assert "alpha-team" in tenants and "beta-team" in tenants

    totals = page.locator("#totals")
    span = urllib.parse.urlencode({"group_by": "team,tenant", "from": totals.get_attribute("data-from"),
                                   "to": totals.get_attribute("data-to")})
    costs = call(served.base, f"/v1/costs?{span}", ADMIN)
    rows = costs["rows"]
    assert {r["group"]["tenant"] for r in rows} >= {"alpha", "beta"}
    spend = float(page.get_attribute("#total-spend", "data-value"))
    assert spend > 0
    assert math.isclose(spend, sum(r["cost_usd"] for r in rows), rel_tol=1e-9)
    assert int(page.get_attribute("#total-requests", "data-value")) == sum(r["requests"] for r in rows) == 34
    hits = sum(r["cache_hits"] for r in rows)
    assert hits == 16  # alpha asked 8 distinct inputs three times each
    assert math.isclose(float(page.get_attribute("#hit-ratio", "data-value")), hits / 34)
    saved = float(page.get_attribute("#total-saved", "data-value"))
    assert math.isclose(saved, sum(r["saved_usd"] for r in rows), rel_tol=1e-9) and saved > 0

    # Budgets, the model's queue and device figures, and charts of both series are drawn.
    budgets = page.inner_text("#budgets tbody")
    assert "alpha" in budgets and "beta" in budgets and "alert" in budgets
    queues = page.inner_text("#queues tbody")
    assert "digits" in queues
    assert "digits" in page.inner_text("#instances tbody")
    assert page.locator("#spend-chart canvas").count() == 1
    assert page.locator("#cache-chart canvas").count() == 1
    legend = page.inner_text("#spend-chart")
    assert "alpha" in legend and "beta" in legend

    # It goes on refreshing by itself and sees new traffic.
    last = refreshed(page)
    infer(served.base, "beta", 500.0)
    time.sleep(0.5)
    for _ in range(10):
        last = refreshed(page, last)
        if page.get_attribute("#total-requests", "data-value") == "35":
            break
    assert page.get_attribute("#total-requests", "data-value") == "35"

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    assert problems == []
    page.close()


def test_a_wrong_token_is_refused_and_asked_again(browser, served):
    page, problems = open_page(browser, served.base)
    page.wait_for_selector("#login:not([hidden])")
    page.fill("#token", "not-the-admin-token")
    page.click("#login-form button")
    page.wait_for_function("() => document.getElementById('login-error').textContent.includes('refused')")
    assert page.is_hidden("#board")
    # The browser logs the refused calls themselves; nothing else may go wrong.
    assert problems and all("status of 401" in p for p in problems), problems
    page.close()


def test_without_an_admin_token_the_dashboard_is_open_and_the_gateway_warns(browser):
    with tempfile.TemporaryDirectory() as tmp:
        gateway = Gateway(tmp, admin=False)
        try:
            infer(gateway.base, "alpha", 1.0)
            page, problems = open_page(browser, gateway.base)
            refreshed(page)
            assert page.is_hidden("#login")
            assert "/dashboard" in gateway.log.read_text().split("admin_token_blake3 is not set")[1].split("\n")[0]
            assert problems == []
            page.close()
        finally:
            gateway.stop()


def test_the_assets_are_served_with_a_same_origin_policy(served):
    for path, kind in [("/dashboard", "text/html"), ("/dashboard/app.js", "text/javascript"),
                       ("/dashboard/uplot.js", "text/javascript"), ("/dashboard/licenses", "text/plain")]:
        with urllib.request.urlopen(served.base + path, timeout=5) as reply:
            assert reply.headers["Content-Type"].startswith(kind)
            assert "default-src 'self'" in reply.headers["Content-Security-Policy"]
            assert reply.read()
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(served.base + "/dashboard/nothing.js", timeout=5)
    assert missing.value.code == 404
    assert "error" in json.loads(missing.value.read())
