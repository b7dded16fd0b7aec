"""Triton Python model `enhance_pre`: a thin adapter over `facecraft.pipeline.stages.enhance_pre_stage`.

Tensors and errors are converted by `facecraft.pipeline.triton_adapter`; see docs/triton.md.
"""

from facecraft.pipeline.triton_adapter import StageModel


class TritonPythonModel(StageModel):
    STEP = "enhance_pre"
