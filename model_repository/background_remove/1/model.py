"""Triton Python model `background_remove`: a thin adapter over
`facecraft.pipeline.processor_stages.background_remove_stage`, which calls the requested U²-Net
variant (`u2net`, `u2net_general`, `u2netp`) through BLS; see docs/processors.md.
"""

import functools

from facecraft.pipeline.triton_adapter import StageModel, bls_infer


class TritonPythonModel(StageModel):
    STEP = "background_remove"

    def bind_stage(self, stage, args):
        return functools.partial(stage, infer=bls_infer)
