"""Triton Python model `enhance_post`: a thin adapter over `facecraft.pipeline.stages.enhance_post_stage`.

Tensors and errors are converted by `facecraft.pipeline.triton_adapter`; see docs/triton.md.
"""

from facecraft.pipeline.triton_adapter import StageModel


class TritonPythonModel(StageModel):
    STEP = "enhance_post"
