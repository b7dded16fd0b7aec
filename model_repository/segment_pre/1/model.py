"""Triton Python model `segment_pre`: a thin adapter over `facecraft.pipeline.stages.segment_pre_stage`.

Tensors and errors are converted by `facecraft.pipeline.triton_adapter`; see docs/triton.md.
"""

from facecraft.pipeline.stages import STAGE_INPUTS, STAGES
from facecraft.pipeline.triton_adapter import execute_each, python_logger

STEP = "segment_pre"


class TritonPythonModel:
    def initialize(self, args):
        self.logger = python_logger()
        self.stage = STAGES[STEP]
        self.input_names = STAGE_INPUTS[STEP]

    def execute(self, requests):
        return execute_each(requests, STEP, self.input_names, self.stage, self.logger)

    def finalize(self):
        pass
