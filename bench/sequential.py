"""The plain in-process baseline: the same ONNX files and ``facecraft.pipeline`` stage functions,
run one after the other in this process with onnxruntime sessions — what a user would write
instead of Triton. No batching, no parallel branches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facecraft.client.errors import FacecraftError, parse_error_message
from facecraft.client.options import PortraitOptions, encode_inputs
from facecraft.client.result import PortraitResult, result_from_outputs


class SequentialPipeline:
    """decode → detect → [enhance_pre → CodeFormer → enhance_post] → segment_pre → U²-Net → compose."""

    def __init__(self, repo: Path, device: str = "cpu"):
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if device == "gpu" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        repo = Path(repo)
        self.codeformer = ort.InferenceSession(
            str(repo / "codeformer" / "1" / "model.onnx"), providers=providers
        )
        self.u2net = ort.InferenceSession(str(repo / "u2net" / "1" / "model.onnx"), providers=providers)

    def process(self, image_bytes: bytes, options: PortraitOptions) -> PortraitResult:
        """Run one photo through every stage; pipeline errors come back as ``FacecraftError``s."""
        from facecraft.pipeline.errors import PipelineError
        from facecraft.pipeline.stages import STAGES

        inputs = {spec.name: spec.value[0] for spec in encode_inputs(image_bytes, options)}
        try:
            decoded = STAGES["decode"](inputs)
            detected = STAGES["detect"](decoded)
            rgb = decoded["RGB"]
            if options.enhance:
                pre = STAGES["enhance_pre"]({"RGB": rgb, **detected})
                restored = self.codeformer.run(
                    None,
                    {"input": pre["FACE_INPUT"][None].astype(np.float32), "w": decoded["FIDELITY_W"][None]},
                )[0][0]
                rgb = STAGES["enhance_post"]({"RGB": rgb, "RESTORED": restored, "AFFINE": pre["AFFINE"]})[
                    "ENHANCED"
                ]
            seg_input = STAGES["segment_pre"]({"RGB": decoded["RGB"], "FACE_COUNT": detected["FACE_COUNT"]})[
                "SEG_INPUT"
            ]
            seg_map = self.u2net.run(None, {"input": seg_input[None].astype(np.float32)})[0][0]
            composed = STAGES["compose"](
                {
                    "RGB": rgb,
                    "SEG_MAP": seg_map,
                    "LANDMARKS": detected["LANDMARKS"],
                    "FACE_BOX_WORK": detected["FACE_BOX_WORK"],
                    "OPTIONS": decoded["OPTIONS"],
                    "ORIGINAL_SIZE": decoded["ORIGINAL_SIZE"],
                }
            )
        except PipelineError as error:
            raise parse_error_message(str(error)) from error
        except FacecraftError:
            raise
        outputs = {**composed, "FACE_COUNT": detected["FACE_COUNT"]}
        return result_from_outputs(outputs.get)
