"""Serves the bundled digits model from a real Triton (the one `nvidia-pytriton` bundles).

pytriton has no ONNX backend, so Triton runs this Python function (onnxruntime, one thread)
behind its own dynamic batcher. Usage: triton_digits.py MODEL_PATH HTTP_PORT GRPC_PORT METRICS_PORT
"""

import signal
import sys

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig


def main() -> None:
    model_path, http_port, grpc_port, metrics_port = sys.argv[1], *map(int, sys.argv[2:5])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])

    @batch
    def infer(input):
        label, probabilities = session.run(None, {"input": input.astype(np.float32)})
        # Triton wants a per-row shape for every output, so the scalar label becomes (1,).
        return {"label": label.reshape(-1, 1).astype(np.int64), "probabilities": probabilities}

    # pytriton runs tritonserver in a session of its own; exiting through the context manager
    # below is what stops it, so a plain SIGTERM must become a normal exit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    config = TritonConfig(http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port)
    with Triton(config=config) as triton:
        triton.bind(
            model_name="digits",
            infer_func=infer,
            inputs=[Tensor(name="input", dtype=np.float32, shape=(64,))],
            outputs=[
                Tensor(name="label", dtype=np.int64, shape=(1,)),
                Tensor(name="probabilities", dtype=np.float32, shape=(10,)),
            ],
            config=ModelConfig(
                max_batch_size=64,
                batcher=DynamicBatcher(max_queue_delay_microseconds=2000),
            ),
        )
        triton.serve()


if __name__ == "__main__":
    main()
