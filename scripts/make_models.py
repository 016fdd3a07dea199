#!/usr/bin/env python3
"""Regenerate the small models bundled with Tollgate.

Writes, relative to the repository root:

  models/digits/1/model.onnx        MLP classifier for the 8x8 scikit-learn digits
  models/digits/test_rows.json      held-out rows + the labels this exact file predicts
  models/int_scorer/1/model.onnx    tiny linear scorer with an INT64 input
  models/int_scorer/test_rows.json  token rows + the argmax this exact file predicts
  models/row_sum/1/model.onnx       sums each row of an FP32 [N, M] input (both dims open)
  models/slow/1/model.onnx          deliberately compute-heavy: ~400 MFLOP per row from a 256-float input
  models/labels/1/model.onnx        string tensors: words (BYTES [N]) to ids (INT64) and names (BYTES)
  models/labels/test_rows.json      words + the ids and names this exact file answers

Everything is seeded, so a rerun on the same library versions reproduces the
same files (see scripts/requirements-models.txt for the pinned versions).

The expected values in test_rows.json are what onnxruntime computes on the
written file, not the dataset's ground truth: the interop tests check that the
gateway serves *this model* faithfully, not that the model is accurate.

Usage (from anywhere):  python scripts/make_models.py
"""

import json
import pathlib

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
MODELS_DIR = REPO_ROOT / "models"

# Name used for every dynamic batch dimension, so model metadata looks the
# same across the bundled models.
BATCH_DIM = "N"
N_TEST_ROWS = 16


def ort_session(path: pathlib.Path) -> ort.InferenceSession:
    # CPU only: the reference values must not depend on what accelerator the
    # machine that regenerates the models happens to have.
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def set_batch_dim_param(value_info: onnx.ValueInfoProto) -> None:
    """Give the leading dimension of a graph input/output the symbolic name N."""
    dim = value_info.type.tensor_type.shape.dim[0]
    dim.Clear()
    dim.dim_param = BATCH_DIM


def write_json(path: pathlib.Path, payload: dict) -> None:
    # One row per line keeps the file readable and diffs small.
    lines = ["{"]
    keys = list(payload)
    for i, key in enumerate(keys):
        value = payload[key]
        if value and isinstance(value[0], list):
            rows = ",\n".join("    " + json.dumps(row) for row in value)
            body = "[\n" + rows + "\n  ]"
        else:
            body = json.dumps(value)
        lines.append(f'  "{key}": {body}' + ("," if i < len(keys) - 1 else ""))
    lines.append("}")
    path.write_text("\n".join(lines) + "\n")


def describe(path: pathlib.Path) -> None:
    sess = ort_session(path)
    size_kb = path.stat().st_size / 1024
    print(f"  {path.relative_to(REPO_ROOT)} ({size_kb:.1f} KiB)")
    for kind, args in (("input ", sess.get_inputs()), ("output", sess.get_outputs())):
        for a in args:
            print(f"    {kind} {a.name:<14} {a.type:<14} {a.shape}")


# --------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------

def make_digits() -> None:
    out_dir = MODELS_DIR / "digits"
    model_path = out_dir / "1" / "model.onnx"
    model_path.parent.mkdir(parents=True, exist_ok=True)

    digits = load_digits()
    # The raw pixel values are the integers 0..16. They are fed unscaled so
    # every input value is exactly representable in FP32 and in JSON: a client
    # sending the rows as JSON numbers cannot lose precision on the way in.
    x = digits.data.astype(np.float32)
    y = digits.target
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )

    clf = MLPClassifier(hidden_layer_sizes=(128, 64), random_state=0, max_iter=1000)
    clf.fit(x_train, y_train)

    onx = to_onnx(
        clf,
        initial_types=[("input", FloatTensorType([None, 64]))],
        # zipmap=False: plain [N,10] tensor instead of a sequence of maps,
        # which a KServe tensor API cannot express.
        options={id(clf): {"zipmap": False}},
        target_opset=17,
    )

    # skl2onnx's output names have varied across releases (output_label /
    # output_probability vs label / probabilities); pin the names the gateway
    # and its tests rely on.
    rename = {
        "output_label": "label",
        "output_probability": "probabilities",
    }
    for node in onx.graph.node:
        for i, name in enumerate(node.output):
            if name in rename:
                node.output[i] = rename[name]
    for out in onx.graph.output:
        out.name = rename.get(out.name, out.name)
    names = [o.name for o in onx.graph.output]
    assert names == ["label", "probabilities"], names

    for vi in list(onx.graph.input) + list(onx.graph.output):
        set_batch_dim_param(vi)
    onx.doc_string = "MLP (128,64) on sklearn load_digits; regenerate with scripts/make_models.py"
    onnx.checker.check_model(onx, full_check=True)
    onnx.save(onx, str(model_path))

    # Reference values come from the saved file, run by onnxruntime.
    sess = ort_session(model_path)
    rows = x_test[:N_TEST_ROWS]
    label, probabilities = sess.run(["label", "probabilities"], {"input": rows})
    assert label.dtype == np.int64 and label.shape == (N_TEST_ROWS,)
    assert probabilities.dtype == np.float32 and probabilities.shape == (N_TEST_ROWS, 10)

    # The ONNX graph must agree with scikit-learn itself, otherwise the export
    # is wrong and there is no point serving it.
    all_label, _ = sess.run(["label", "probabilities"], {"input": x_test})
    assert np.array_equal(all_label, clf.predict(x_test)), "ONNX and sklearn disagree"

    write_json(
        out_dir / "test_rows.json",
        {
            "input": [[float(v) for v in row] for row in rows],
            "label": [int(v) for v in label],
        },
    )

    print("digits:")
    describe(model_path)
    print(f"  sklearn iterations: {clf.n_iter_}")
    print(f"  held-out accuracy ({len(y_test)} rows): {np.mean(all_label == y_test):.4f}")
    print(f"  test_rows predicted: {label.tolist()}")
    print(f"  test_rows true:      {y_test[:N_TEST_ROWS].tolist()}")


# --------------------------------------------------------------------------
# int_scorer
# --------------------------------------------------------------------------

def make_int_scorer() -> None:
    out_dir = MODELS_DIR / "int_scorer"
    model_path = out_dir / "1" / "model.onnx"
    model_path.parent.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(20240607)
    # Weights and bias are multiples of 1/64 and tokens are small integers, so
    # every product and partial sum is exactly representable in FP32 (well
    # under 24 significant bits). The scores are therefore bit-exact whatever
    # order a MatMul kernel sums in, and any difference a test sees is a real
    # transport bug rather than float noise.
    weight = (rng.integers(-64, 65, size=(16, 4)) / 64.0).astype(np.float32)
    bias = (rng.integers(-64, 65, size=(4,)) / 64.0).astype(np.float32)

    graph = helper.make_graph(
        nodes=[
            helper.make_node("Cast", ["tokens"], ["tokens_f"], to=TensorProto.FLOAT),
            helper.make_node("MatMul", ["tokens_f", "weight"], ["matmul_out"]),
            helper.make_node("Add", ["matmul_out", "bias"], ["scores"]),
            helper.make_node("ArgMax", ["scores"], ["argmax"], axis=1, keepdims=0),
        ],
        name="int_scorer",
        inputs=[helper.make_tensor_value_info("tokens", TensorProto.INT64, [BATCH_DIM, 16])],
        outputs=[
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [BATCH_DIM, 4]),
            helper.make_tensor_value_info("argmax", TensorProto.INT64, [BATCH_DIM]),
        ],
        initializer=[
            numpy_helper.from_array(weight, "weight"),
            numpy_helper.from_array(bias, "bias"),
        ],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17)],
        producer_name="tollgate-make_models",
        doc_string="Cast(int64->float) . MatMul . Add, plus ArgMax; regenerate with scripts/make_models.py",
    )
    # IR 8 is the version that goes with opset 17; helper.make_model would
    # stamp the newest IR the onnx package knows, which older runtimes reject.
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(model_path))

    # Token rows: mostly non-negative ids plus a few negatives, so a gateway
    # that mangles signedness or width of INT64 shows up. Rows whose top
    # score is tied are dropped so argmax does not rely on tie-breaking.
    sess = ort_session(model_path)
    rows = []
    while len(rows) < N_TEST_ROWS:
        row = rng.integers(-8, 100, size=(1, 16), dtype=np.int64)
        (scores,) = sess.run(["scores"], {"tokens": row})
        top2 = np.sort(scores[0])[-2:]
        if top2[0] != top2[1]:
            rows.append(row[0])
    tokens = np.stack(rows)
    scores, argmax = sess.run(["scores", "argmax"], {"tokens": tokens})
    assert np.array_equal(scores, tokens.astype(np.float32) @ weight + bias)

    write_json(
        out_dir / "test_rows.json",
        {
            "tokens": [[int(v) for v in row] for row in tokens],
            "argmax": [int(v) for v in argmax],
        },
    )

    print("int_scorer:")
    describe(model_path)
    print(f"  test_rows argmax: {argmax.tolist()}")


# --------------------------------------------------------------------------
# row_sum
# --------------------------------------------------------------------------

def make_row_sum() -> None:
    """A model whose input has no fixed dimension at all, so one request body can be sent
    with several shapes. The cache tests use it to show that equal bytes under a different
    shape are a different key."""
    model_path = MODELS_DIR / "row_sum" / "1" / "model.onnx"
    model_path.parent.mkdir(parents=True, exist_ok=True)
    graph = helper.make_graph(
        nodes=[helper.make_node("ReduceSum", ["x", "axes"], ["sum"], keepdims=0)],
        name="row_sum",
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, [BATCH_DIM, "M"])],
        outputs=[helper.make_tensor_value_info("sum", TensorProto.FLOAT, [BATCH_DIM])],
        initializer=[numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17)],
        producer_name="tollgate-make_models",
        doc_string="ReduceSum over axis 1; regenerate with scripts/make_models.py",
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(model_path))
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    (sums,) = ort_session(model_path).run(["sum"], {"x": x})
    assert np.array_equal(sums, x.sum(axis=1))
    print("row_sum:")
    describe(model_path)


# --------------------------------------------------------------------------
# slow
# --------------------------------------------------------------------------

def make_slow() -> None:
    """A model that is slow on purpose (about 400 MFLOP per row), so load tests can drive a
    gateway past its capacity on a small machine. The row's outer product with itself makes a
    256 x 256 matrix that twelve shared-weight layers multiply; the file stays small."""
    model_path = MODELS_DIR / "slow" / "1" / "model.onnx"
    model_path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    weight = (rng.standard_normal((256, 256)) / 16.0).astype(np.float32)
    nodes = [
        helper.make_node("Unsqueeze", ["x", "axis2"], ["column"]),
        helper.make_node("Unsqueeze", ["x", "axis1"], ["row"]),
        helper.make_node("MatMul", ["column", "row"], ["h0"]),
    ]
    previous = "h0"
    for layer in range(12):
        nodes.append(helper.make_node("MatMul", [previous, "w"], [f"m{layer}"]))
        nodes.append(helper.make_node("Tanh", [f"m{layer}"], [f"t{layer}"]))
        previous = f"t{layer}"
    nodes.append(helper.make_node("ReduceSum", [previous, "axes"], ["score"], keepdims=0))
    graph = helper.make_graph(
        nodes=nodes,
        name="slow",
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, [BATCH_DIM, 256])],
        outputs=[helper.make_tensor_value_info("score", TensorProto.FLOAT, [BATCH_DIM])],
        initializer=[
            numpy_helper.from_array(weight, "w"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
            numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "axes"),
        ],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17)],
        producer_name="tollgate-make_models",
        doc_string="outer product, 12 x (MatMul 256x256 + Tanh), ReduceSum; regenerate with scripts/make_models.py",
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(model_path))
    (scores,) = ort_session(model_path).run(["score"], {"x": np.ones((2, 256), dtype=np.float32)})
    assert scores.shape == (2,)
    print("slow:")
    describe(model_path)


# --------------------------------------------------------------------------
# labels
# --------------------------------------------------------------------------

# Words (some not ASCII) to ids, and ids to names; anything else is id -1, "unknown".
LABEL_IDS = {"cat": 0, "kitten": 0, "dog": 1, "puppy": 1, "café": 2, "🦀": 3}
LABEL_NAMES = {0: "feline", 1: "canine", 2: "coffee", 3: "crustacean"}


def make_labels() -> None:
    """Two ai.onnx.ml LabelEncoders: a BYTES input and a BYTES output, with no floats, so a
    test can compare answers exactly and every string path of the gateway is exercised."""
    model_path = MODELS_DIR / "labels" / "1" / "model.onnx"
    model_path.parent.mkdir(parents=True, exist_ok=True)
    words = list(LABEL_IDS)
    ids = sorted(LABEL_NAMES)
    graph = helper.make_graph(
        nodes=[
            helper.make_node(
                "LabelEncoder", ["text"], ["id"], domain="ai.onnx.ml",
                keys_strings=words, values_int64s=[LABEL_IDS[w] for w in words],
                default_int64=-1,
            ),
            helper.make_node(
                "LabelEncoder", ["id"], ["name"], domain="ai.onnx.ml",
                keys_int64s=ids, values_strings=[LABEL_NAMES[i] for i in ids],
                default_string="unknown",
            ),
        ],
        name="labels",
        inputs=[helper.make_tensor_value_info("text", TensorProto.STRING, [BATCH_DIM])],
        outputs=[
            helper.make_tensor_value_info("id", TensorProto.INT64, [BATCH_DIM]),
            helper.make_tensor_value_info("name", TensorProto.STRING, [BATCH_DIM]),
        ],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 2)],
        producer_name="tollgate-make_models",
        doc_string="LabelEncoder(words -> ids), LabelEncoder(ids -> names); regenerate with scripts/make_models.py",
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(model_path))
    # Test rows: known words, unknown ones, the empty string, escapes JSON must carry.
    text = ["dog", "café", "zebra", "🦀", "kitten", "", 'a "quoted"\tword', "puppy", "naïve"]
    got_ids, got_names = ort_session(model_path).run(["id", "name"], {"text": np.array(text, dtype=object)})
    assert got_ids.tolist() == [LABEL_IDS.get(w, -1) for w in text], got_ids
    assert got_names.tolist() == [LABEL_NAMES.get(LABEL_IDS.get(w, -1), "unknown") for w in text]
    write_json(
        MODELS_DIR / "labels" / "test_rows.json",
        {"text": text, "id": got_ids.tolist(), "name": got_names.tolist()},
    )
    print("labels:")
    describe(model_path)


if __name__ == "__main__":
    make_labels()
    make_digits()
    make_int_scorer()
    make_row_sum()
    make_slow()
