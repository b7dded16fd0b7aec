"""Triton Python model `compose`: a thin adapter over `facecraft.pipeline.stages.compose_stage`.

Tensors and errors are converted by `facecraft.pipeline.triton_adapter`; see docs/triton.md.
"""

from facecraft.pipeline.triton_adapter import StageModel


class TritonPythonModel(StageModel):
    STEP = "compose"
