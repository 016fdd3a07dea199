#!/usr/bin/env python3
"""Right-sized variants of the bundled digits model, made from the bundled file itself:

  models/digits/1/model.int8.onnx   dynamic int8 quantisation (onnxruntime.quantization)
  models/digits/1/model.fp16.onnx   fp16 weights and arithmetic, fp32 inputs and outputs

Each is checked against the primary on the bundled test rows (models/digits/test_rows.json):
the share of labels that agree, and the largest difference in the class probabilities. The
figures are printed and written to models/digits/variants.json, which the README quotes.

Needs only onnx and onnxruntime at the versions scripts/requirements-models.txt pins; the
primary is not retrained, so its answers (and test_rows.json) stay as they are.
"""

import json
import pathlib

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.transformers.float16 import convert_float_to_float16

MODELS = pathlib.Path(__file__).resolve().parents[1] / "models" / "digits"
PRIMARY = MODELS / "1" / "model.onnx"
INT8 = MODELS / "1" / "model.int8.onnx"
FP16 = MODELS / "1" / "model.fp16.onnx"


def sort_nodes(graph: onnx.GraphProto) -> None:
    """Topological order, which the fp16 converter's added casts break (the checker wants it)."""
    known = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        ready = [n for n in pending if all(i in known for i in n.input)]
        if not ready:
            raise SystemExit("the fp16 graph has a cycle or a missing input")
        for node in ready:
            ordered.append(node)
            known.update(node.output)
            pending.remove(node)
    del graph.node[:]
    graph.node.extend(ordered)


def run(path: pathlib.Path, rows: np.ndarray):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    label, probabilities = session.run(["label", "probabilities"], {"input": rows})
    return label, probabilities


def main() -> None:
    quantize_dynamic(str(PRIMARY), str(INT8), weight_type=QuantType.QInt8)
    half = convert_float_to_float16(onnx.load(str(PRIMARY)), keep_io_types=True)
    half.doc_string = "fp16 variant of the digits MLP; regenerate with scripts/make_variants.py"
    sort_nodes(half.graph)
    onnx.checker.check_model(half)
    onnx.save(half, str(FP16))

    rows = np.array(json.loads((MODELS / "test_rows.json").read_text())["input"], dtype=np.float32)
    label, probabilities = run(PRIMARY, rows)
    report = {"rows": len(rows)}
    for name, path in (("int8", INT8), ("fp16", FP16)):
        other_label, other_probabilities = run(path, rows)
        report[name] = {
            "agreement": float(np.mean(other_label == label)),
            "max_abs_probability_error": float(np.max(np.abs(other_probabilities - probabilities))),
            "bytes": path.stat().st_size,
        }
    report["primary_bytes"] = PRIMARY.stat().st_size
    (MODELS / "variants.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
