"""Triton Python model `face_enhance`: a thin adapter over
`facecraft.pipeline.processor_stages.face_enhance_stage`, which sends every face of an image to
`codeformer` as one batch through BLS (chunks of the served `codeformer` max_batch_size); see
docs/processors.md.
"""

import functools

from facecraft.pipeline.triton_adapter import StageModel, bls_infer, served_max_batch_size


class TritonPythonModel(StageModel):
    STEP = "face_enhance"

    def bind_stage(self, stage, args):
        max_batch = served_max_batch_size(args.get("model_repository"), "codeformer")
        return functools.partial(stage, infer=bls_infer, max_batch=max_batch)
