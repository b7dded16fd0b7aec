"""Triton Python model `face_analyse`: a thin adapter over
`facecraft.pipeline.processor_stages.face_analyse_stage`; see docs/processors.md.
"""

from facecraft.pipeline.triton_adapter import StageModel


class TritonPythonModel(StageModel):
    STEP = "face_analyse"
