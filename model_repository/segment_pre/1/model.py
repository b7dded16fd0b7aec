"""Triton Python model `segment_pre`: a thin adapter over `facecraft.pipeline.stages.segment_pre_stage`.

Tensors and errors are converted by `facecraft.pipeline.triton_adapter`; see docs/triton.md.
"""

from facecraft.pipeline.triton_adapter import StageModel


class TritonPythonModel(StageModel):
    STEP = "segment_pre"
