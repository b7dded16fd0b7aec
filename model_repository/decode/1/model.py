"""Triton Python model `decode`: a thin adapter over `facecraft.pipeline.stages.decode_stage`.

Tensors and errors are converted by `facecraft.pipeline.triton_adapter`; see docs/triton.md.
"""

from facecraft.pipeline.triton_adapter import StageModel


class TritonPythonModel(StageModel):
    STEP = "decode"
