"""Triton Python model `compose`: a thin adapter over `facecraft.pipeline.stages.compose_stage`.

Tensors and errors are converted by `facecraft.pipeline.triton_adapter`; see docs/triton.md.
At start it reads whether the served U²-Net weights are trained (`u2net/1/export.json` beside this
model), which decides whether ID-photo presets may take the crown from the mask.
"""

import functools
from pathlib import Path

from facecraft.pipeline.stages import compose_stage
from facecraft.pipeline.triton_adapter import StageModel
from facecraft.runtime.serve import weights_status


class TritonPythonModel(StageModel):
    STEP = "compose"

    def warm_up(self) -> None:
        model_dir = self.args.get("model_repository")  # <repository>/compose, set by Triton
        record = weights_status(Path(model_dir).parent, "u2net") if model_dir else None
        self.mask_trusted = bool(record and record.get("trained") is True)
        self.stage = functools.partial(compose_stage, mask_trusted=self.mask_trusted)
