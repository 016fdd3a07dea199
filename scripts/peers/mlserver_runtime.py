"""A minimal MLServer runtime for the bundled digits model (onnxruntime, one thread).

MLServer has no ONNX runtime of its own; this is the custom `MLModel` its docs describe. Its
adaptive batching (max_batch_size, max_batch_time in model-settings.json) merges requests.

`GET /digits/executions` (a custom handler on MLServer's HTTP port) reports how many times the
model ran and on how many rows, with the batch settings MLServer loaded, so a benchmark can show
rows per execution. The counts live in the process that runs `predict`: they are only meaningful
with `"parallel_workers": 0` (the handler answers from the main process).
"""

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.handlers import custom_handler
from mlserver.types import InferenceRequest, InferenceResponse


class DigitsRuntime(MLModel):
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self._session = ort.InferenceSession(
            self.settings.parameters.uri, options, providers=["CPUExecutionProvider"]
        )
        self._executions = 0
        self._rows = 0
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        rows = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32)
        label, probabilities = self._session.run(None, {"input": rows})
        self._executions += 1
        self._rows += int(rows.shape[0])
        return InferenceResponse(
            model_name=self.name,
            outputs=[
                NumpyCodec.encode_output("label", label.astype(np.int64)),
                NumpyCodec.encode_output("probabilities", probabilities),
            ],
        )

    @custom_handler(rest_path="/digits/executions", rest_method="GET")
    async def executions(self) -> dict:
        return {
            "executions": self._executions,
            "rows": self._rows,
            "max_batch_size": self.settings.max_batch_size,
            "max_batch_time": self.settings.max_batch_time,
            # Set by MLServer (1.7) when it wraps predict in its adaptive batcher.
            "adaptive_batching": hasattr(self, "__adaptive_batching__"),
        }
