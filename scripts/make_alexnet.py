#!/usr/bin/env python3
"""Build a batchable AlexNet for load tests from the copy shipped in the onnx wheel.

The onnx package carries `backend/test/data/light/light_bvlc_alexnet.onnx`: the
BVLC AlexNet graph with every weight replaced by a ConstantOfShape fill, so the
file is a few KB but the network does the full AlexNet amount of work. That
makes it a realistic compute load without downloading anything. Because all
weights are one constant, its output does not depend on its input (every row
is the same softmax); it is for measuring throughput, not for checking answers.

As shipped the model only accepts batch 1. This script:
  * names the leading dimension of the image input and the output "N";
  * turns the Reshape target [1, 9216] (flatten before fc6) into [-1, 9216];
  * drops any intermediate value_info that would pin the batch size;
  * removes initializers from the graph inputs (the file is IR 3, where every
    initializer also had to be a graph input) and raises the IR version so
    that is legal; otherwise a server listing graph inputs would advertise the
    17 weight-shape tensors as inputs the client has to send;
then checks with onnxruntime that batch 1 and batch 4 both run and agree, and
writes models/alexnet/1/model.onnx (bundled: the file is a few KB).

Usage (from anywhere):  python scripts/make_alexnet.py
"""

import os
import pathlib

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT_PATH = REPO_ROOT / "models" / "alexnet" / "1" / "model.onnx"
SOURCE = pathlib.Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light" / "light_bvlc_alexnet.onnx"

BATCH_DIM = "N"
# Lowest IR version in which initializers need not be graph inputs. The
# opset (9) is left alone: onnxruntime supports it and converting would change
# nothing a load test cares about.
MIN_IR_VERSION = 4


def make_batchable(model: onnx.ModelProto) -> onnx.ModelProto:
    graph = model.graph
    initializer_names = {init.name for init in graph.initializer}

    # Keep only the real inputs (the image).
    real_inputs = [vi for vi in graph.input if vi.name not in initializer_names]
    del graph.input[:]
    graph.input.extend(real_inputs)
    model.ir_version = max(model.ir_version, MIN_IR_VERSION)

    for vi in list(graph.input) + list(graph.output):
        dim = vi.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_param = BATCH_DIM

    # Reshape targets are stored as INT64 initializers; a leading 1 there is
    # the hard-coded batch size. -1 lets Reshape infer it from the input.
    reshape_shapes = {node.input[1] for node in graph.node if node.op_type == "Reshape"}
    for i, init in enumerate(graph.initializer):
        if init.name not in reshape_shapes:
            continue
        shape = numpy_helper.to_array(init).copy()
        if shape.ndim == 1 and shape.size > 0 and shape[0] == 1:
            shape[0] = -1
            graph.initializer[i].CopyFrom(numpy_helper.from_array(shape, init.name))
            print(f"  Reshape target {init.name}: leading 1 -> -1 ({shape.tolist()})")

    # Intermediate shapes recorded for batch 1 would contradict batch N;
    # onnxruntime infers them again at load time.
    del graph.value_info[:]
    return model


def main() -> None:
    print(f"source: {SOURCE}")
    model = make_batchable(onnx.load(str(SOURCE)))
    onnx.checker.check_model(model, full_check=True)

    OUT_PATH.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(OUT_PATH))

    sess = ort.InferenceSession(str(OUT_PATH), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    out_names = [o.name for o in sess.get_outputs()]

    rng = np.random.default_rng(0)
    batch = rng.standard_normal((4, 3, 224, 224), dtype=np.float32)
    (out4,) = sess.run(out_names, {inp.name: batch})
    assert out4.shape[0] == 4, out4.shape
    for i in range(4):
        (out1,) = sess.run(out_names, {inp.name: batch[i : i + 1]})
        assert out1.shape[0] == 1, out1.shape
        np.testing.assert_allclose(out4[i : i + 1], out1, rtol=1e-5, atol=1e-6)
    print("  batch 1 and batch 4 run; batch-4 rows equal batch-1 results")

    print(f"wrote {OUT_PATH.relative_to(REPO_ROOT)} ({OUT_PATH.stat().st_size} bytes, IR {model.ir_version})")
    for kind, args in (("input ", sess.get_inputs()), ("output", sess.get_outputs())):
        for a in args:
            print(f"  {kind} {a.name:<8} {a.type:<14} {a.shape}")


if __name__ == "__main__":
    main()
