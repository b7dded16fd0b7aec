"""Triton Python model `face_swap`: a thin adapter over
`facecraft.pipeline.processor_stages.face_swap_stage` (ArcFace once per request, the swap
generator once for all target faces, both through BLS); the generator's emap is read from the
served `inswapper_128/1/model.onnx` beside this model (`swap.served_emap`, re-read after a
re-export); see docs/processors.md.
"""

import functools
from pathlib import Path

from facecraft.pipeline.swap import served_emap
from facecraft.pipeline.triton_adapter import StageModel, bls_infer, served_max_batch_size


class TritonPythonModel(StageModel):
    STEP = "face_swap"

    def bind_stage(self, stage, args):
        repository = args.get("model_repository")
        onnx_path = Path(repository or ".").parent / "inswapper_128" / "1" / "model.onnx"
        return functools.partial(
            stage,
            infer=bls_infer,
            emap=functools.partial(served_emap, onnx_path),
            max_batch=served_max_batch_size(repository, "inswapper_128", default=16),
            codeformer_batch=served_max_batch_size(repository, "codeformer"),
        )
