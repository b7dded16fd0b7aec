"""The exportable Triton models, torch-free (the gateway reads it without the ``export`` extra).

Each name is a folder of the Triton model repository. ``u2net`` keeps the human-segmentation
weights (the portrait ensembles use it); ``u2net_general`` and ``u2netp`` are rembg's general
``u2net`` and small ``u2netp`` segmentation models with the same tensors as ``u2net``
(docs/export.md). Their ``config.pbtxt`` is not committed: ``facecraft export`` derives it from
the repository's ``u2net`` config (:data:`CONFIG_TEMPLATES`), so a repository without their
exports loads as before.
"""

from __future__ import annotations

from pathlib import Path

REALESRGAN_MODELS = ("realesrgan_x4plus", "realesrgan_x2plus")
# Face swap (ArcFace recogniser + inswapper_128-compatible generator) and frame enhancement.
SWAP_AND_ENHANCE_MODELS = ("arcface_w600k_r50", "inswapper_128", *REALESRGAN_MODELS)
MODEL_NAMES = ("codeformer", "u2net", "u2net_general", "u2netp", *SWAP_AND_ENHANCE_MODELS)
# Published by their authors as ONNX files only: the official weights are installed as the
# published file (facecraft.export.onnx_install), never traced from our definition.
ONNX_ONLY = ("arcface_w600k_r50", "inswapper_128")
# `facecraft export all`, `make models` and `facecraft serve` export these (the portrait set).
DEFAULT_EXPORTS = ("codeformer", "u2net")
# Triton model name -> the weights variants it accepts; the first is its default.
VARIANTS: dict[str, tuple[str, ...]] = {
    "codeformer": ("codeformer",),
    "u2net": ("u2net_human_seg", "u2net", "u2netp"),
    "u2net_general": ("u2net",),
    "u2netp": ("u2netp",),
    **{name: (name,) for name in SWAP_AND_ENHANCE_MODELS},
}
DEFAULT_VARIANTS = {name: variants[0] for name, variants in VARIANTS.items()}
# Models whose config.pbtxt `facecraft export` writes from another model's config (name changed).
CONFIG_TEMPLATES = {"u2net_general": "u2net", "u2netp": "u2net"}
# Models whose config.pbtxt is committed in export/configs/ (their tensors are their own) and
# written into the repository by `facecraft export <name>`: the repository does not load them
# until they are exported, so a portrait deployment never fetches the non-commercial swap models.
COMMITTED_CONFIGS = {
    name: Path(__file__).parent / "configs" / f"{name}.pbtxt" for name in SWAP_AND_ENHANCE_MODELS
}
# Licence of the published weights and code (sources: the repositories' LICENSE files).
LICENCES = {
    "codeformer": "S-Lab License 1.0 (non-commercial; sczhou/CodeFormer)",
    "u2net": "Apache-2.0 (xuebinqin/U-2-Net)",
    "u2net_general": "Apache-2.0 (xuebinqin/U-2-Net)",
    "u2netp": "Apache-2.0 (xuebinqin/U-2-Net)",
    "arcface_w600k_r50": "insightface pretrained models: non-commercial research use only (deepinsight/insightface)",
    "inswapper_128": "insightface pretrained models: non-commercial research use only (deepinsight/insightface)",
    "realesrgan_x4plus": "BSD-3-Clause (xinntao/Real-ESRGAN)",
    "realesrgan_x2plus": "BSD-3-Clause (xinntao/Real-ESRGAN)",
}


# Models whose published weights may not be used commercially (their LICENCES entry says so).
NON_COMMERCIAL = frozenset({"codeformer", "arcface_w600k_r50", "inswapper_128"})


def default_variant(name: str) -> str | None:
    """The weights variant a Triton model gets by default, or None for an unknown name."""
    return DEFAULT_VARIANTS.get(name)
