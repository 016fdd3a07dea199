"""Right-sized variants through the real tritonclient: the request parameter `variant` picks
the bundled int8 variant of digits over HTTP and gRPC, the answer says which one ran, and its
labels are the primary's on the bundled test rows."""

import json
import os
import pathlib

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

REPO = pathlib.Path(__file__).resolve().parents[2]
HTTP = os.environ.get("TOLLGATE_HTTP", "")
GRPC = os.environ.get("TOLLGATE_GRPC", "")
ROWS = json.loads((REPO / "models" / "digits" / "test_rows.json").read_text())


def infer(protocol: str, variant):
    if not HTTP or not GRPC:
        pytest.fail("TOLLGATE_HTTP and TOLLGATE_GRPC must be set: run these tests through `make test`")
    module = httpclient if protocol == "http" else grpcclient
    client = module.InferenceServerClient(HTTP if protocol == "http" else GRPC)
    rows = np.array(ROWS["input"], dtype=np.float32)
    tensor = module.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    parameters = {"variant": variant} if variant else None
    result = client.infer("digits_sized", [tensor], parameters=parameters)
    if protocol == "http":
        said = result.get_response()["parameters"]["variant"]
    else:
        said = result.get_response().parameters["variant"].string_param
    return said, result.as_numpy("label").tolist()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("variant,answered", [(None, "primary"), ("int8", "int8")])
def test_the_variant_parameter_picks_the_variant_that_answers(protocol, variant, answered):
    said, labels = infer(protocol, variant)
    assert said == answered
    assert labels == ROWS["label"]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_an_unknown_variant_is_refused_naming_the_parameter(protocol):
    with pytest.raises(Exception) as refused:
        infer(protocol, "int4")
    assert "parameters.variant" in str(refused.value)
