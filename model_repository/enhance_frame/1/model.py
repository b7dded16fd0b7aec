"""Triton Python model `enhance_frame`: a thin adapter over
`facecraft.pipeline.processor_stages.enhance_frame_stage`, which sends the tiles of one image to
`realesrgan_x4plus` or `realesrgan_x2plus` as one batch through BLS (chunks of the served
max_batch_size); see docs/processors.md.
"""

import functools

from facecraft.pipeline.triton_adapter import StageModel, bls_infer, served_max_batch_size


class TritonPythonModel(StageModel):
    STEP = "enhance_frame"

    def bind_stage(self, stage, args):
        # Both Real-ESRGAN configs have the same max_batch_size (export/configs/).
        max_batch = served_max_batch_size(args.get("model_repository"), "realesrgan_x4plus", default=16)
        return functools.partial(stage, infer=bls_infer, max_batch=max_batch)
