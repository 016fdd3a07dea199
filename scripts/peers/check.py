"""Checks Tollgate in front of real peers, over the KServe V2 REST API, with the standard library.

For each Tollgate model named on the command line (each fronting some upstream): metadata and
readiness answer, the 16 bundled test rows get the expected labels, a repeat is a cache hit, and
64 concurrent single rows all get their label while sharing upstream batches.
Usage: check.py TOLLGATE_HTTP_ADDR MODEL [MODEL...]
"""

import json
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROWS = json.loads((Path(__file__).resolve().parents[2] / "models/digits/test_rows.json").read_text())


def call(base, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method="POST" if data else "GET")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read() or b"null")


def labels(reply):
    output = next(o for o in reply["outputs"] if o["name"] == "label")
    flat = output["data"]
    while flat and isinstance(flat[0], list):
        flat = [v for row in flat for v in row]
    return [int(v) for v in flat]


def body(rows):
    return {"inputs": [{"name": "input", "shape": [len(rows), 64], "datatype": "FP32", "data": rows}]}


def check(base, model):
    status, _, metadata = call(base, f"/v2/models/{model}")
    assert status == 200, (model, status, metadata)
    status, _, _ = call(base, f"/v2/models/{model}/ready")
    assert status == 200, (model, "not ready", status)
    status, headers, reply = call(base, f"/v2/models/{model}/infer", body(ROWS["input"]))
    assert status == 200, (model, status, reply)
    assert labels(reply) == ROWS["label"], (model, labels(reply))
    _, headers, _ = call(base, f"/v2/models/{model}/infer", body(ROWS["input"]))
    assert headers.get("x-tollgate-cache") == "hit", (model, headers)

    # Distinct rows (shifted off the cached ones), sent concurrently one by one.
    shifted = [[v + 0.125 * (1 + i // 16) for v in ROWS["input"][i % 16]] for i in range(64)]
    with ThreadPoolExecutor(max_workers=64) as pool:
        replies = list(pool.map(lambda row: call(base, f"/v2/models/{model}/infer", body([row])), shifted))
    assert all(status == 200 for status, _, _ in replies), [r for r in replies if r[0] != 200][:1]
    largest = max(int(headers.get("x-tollgate-batch-size", "0")) for _, headers, _ in replies)
    print(f"{model}: metadata, readiness, labels, cache hit ok; 64 concurrent rows, largest batch {largest}")
    return largest


def main():
    base = "http://" + sys.argv[1]
    failures = 0
    for model in sys.argv[2:]:
        try:
            check(base, model)
        except Exception as error:  # noqa: BLE001 - every model is checked and reported
            failures += 1
            print(f"{model}: FAILED {error!r}")
    print(f"{len(sys.argv) - 2 - failures} passed, {failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
