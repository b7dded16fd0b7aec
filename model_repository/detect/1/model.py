"""Triton Python model `detect`: a thin adapter over `facecraft.pipeline.stages.detect_stage`.

Tensors and errors are converted by `facecraft.pipeline.triton_adapter`; see docs/triton.md.
"""

from facecraft.pipeline.detect import load_models
from facecraft.pipeline.triton_adapter import StageModel


class TritonPythonModel(StageModel):
    STEP = "detect"

    def warm_up(self) -> None:
        load_models()  # dlib detector + 68-point predictor, once per instance
