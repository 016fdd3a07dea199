"""Serves the bundled digits model from a real Triton (the one `nvidia-pytriton` bundles).

pytriton has no ONNX backend, so Triton runs this Python function (onnxruntime, one thread)
behind its own dynamic batcher.

Usage: triton_digits.py MODEL_PATH HTTP_PORT GRPC_PORT METRICS_PORT
           [--max-batch-size N] [--max-queue-delay-us US] [--preferred-batch-sizes N,N,...]

The batcher defaults are max_batch_size 64, max_queue_delay_microseconds 2000 and no preferred
batch sizes (Triton then batches up to max_batch_size).
"""

import argparse
import signal
import sys

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig


def batch_sizes(text: str) -> list:
    """'8,16,32' -> [8, 16, 32]; '' -> []."""
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}")
    if any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError(f"batch sizes must be positive: {text!r}")
    return sizes


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_path")
    parser.add_argument("http_port", type=int)
    parser.add_argument("grpc_port", type=int)
    parser.add_argument("metrics_port", type=int)
    parser.add_argument("--max-batch-size", type=int, default=64,
                        help="rows per model execution at most (default 64)")
    parser.add_argument("--max-queue-delay-us", "--max-queue-delay-microseconds", type=int,
                        default=2000, dest="max_queue_delay_us",
                        help="dynamic batcher's max_queue_delay_microseconds (default 2000)")
    parser.add_argument("--preferred-batch-sizes", type=batch_sizes, default=[],
                        help="comma-separated preferred batch sizes (default: none)")
    args = parser.parse_args(argv)
    if args.max_batch_size < 1:
        parser.error("--max-batch-size must be at least 1")
    if args.max_queue_delay_us < 0:
        parser.error("--max-queue-delay-us must not be negative")
    if any(size > args.max_batch_size for size in args.preferred_batch_sizes):
        parser.error("a preferred batch size is larger than --max-batch-size")
    return args


def main() -> None:
    args = parse_args()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(args.model_path, options, providers=["CPUExecutionProvider"])

    @batch
    def infer(input):
        label, probabilities = session.run(None, {"input": input.astype(np.float32)})
        # Triton wants a per-row shape for every output, so the scalar label becomes (1,).
        return {"label": label.reshape(-1, 1).astype(np.int64), "probabilities": probabilities}

    # pytriton runs tritonserver in a session of its own; exiting through the context manager
    # below is what stops it, so a plain SIGTERM must become a normal exit.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    config = TritonConfig(http_port=args.http_port, grpc_port=args.grpc_port,
                          metrics_port=args.metrics_port)
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
                max_batch_size=args.max_batch_size,
                batcher=DynamicBatcher(
                    max_queue_delay_microseconds=args.max_queue_delay_us,
                    preferred_batch_size=args.preferred_batch_sizes or None,
                ),
            ),
        )
        triton.serve()


if __name__ == "__main__":
    main()
