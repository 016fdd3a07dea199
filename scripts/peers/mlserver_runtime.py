"""A minimal MLServer runtime for the bundled digits model (onnxruntime, one thread).

MLServer has no ONNX runtime of its own; this is the custom `MLModel` its docs describe. Its
adaptive batching (max_batch_size, max_batch_time in model-settings.json) merges requests.
"""

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class DigitsRuntime(MLModel):
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self._session = ort.InferenceSession(
            self.settings.parameters.uri, options, providers=["CPUExecutionProvider"]
        )
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        rows = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32)
        label, probabilities = self._session.run(None, {"input": rows})
        return InferenceResponse(
            model_name=self.name,
            outputs=[
                NumpyCodec.encode_output("label", label.astype(np.int64)),
                NumpyCodec.encode_output("probabilities", probabilities),
            ],
        )
