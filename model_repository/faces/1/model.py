"""Triton Python model `faces`: a thin adapter over `facecraft.pipeline.processor_stages.faces_stage`.

Tensors and errors are converted by `facecraft.pipeline.triton_adapter`; see docs/processors.md.
"""

from facecraft.pipeline.detect import load_models
from facecraft.pipeline.triton_adapter import StageModel


class TritonPythonModel(StageModel):
    STEP = "faces"

    def warm_up(self) -> None:
        load_models()  # dlib detector + 68-point predictor, once per instance
