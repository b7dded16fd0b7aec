import hashlib
import json
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from facecraft.export import exporter, weights
from facecraft.export.exporter import MODEL_NAMES, UntrainedWeightsWarning, export_model, load_weights
from facecraft.export.metadata import read_export_metadata
from facecraft.export.models import build_model, example_inputs, random_model, resolve
from facecraft.export.parity import ParityError
from facecraft.export.u2net_arch import U2NET_FULL, U2NETP, U2Net
from facecraft.runtime.ports import free_port
from tests.fixtures.triton import copy_model_repository

from .conftest import export_tiny


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


NEW_MODELS = ("arcface_w600k_r50", "inswapper_128", "realesrgan_x4plus", "realesrgan_x2plus")
TINY_REPO_MODELS = ("codeformer", "u2net", *NEW_MODELS)  # what the tiny_repo fixture exports


def test_model_names():
    assert ("codeformer", "u2net", "u2net_general", "u2netp", *NEW_MODELS) == MODEL_NAMES


@pytest.mark.parametrize(
    ("name", "inputs", "output"),
    [
        ("codeformer", {"input": ["batch", 3, 512, 512], "w": ["batch", 1]}, ["batch", 3, 512, 512]),
        ("u2net", {"input": ["batch", 3, 320, 320]}, ["batch", 1, 320, 320]),
        ("arcface_w600k_r50", {"input": ["batch", 3, 112, 112]}, ["batch", 512]),
        (
            "inswapper_128",
            {"target": ["batch", 3, 128, 128], "source": ["batch", 512]},
            ["batch", 3, 128, 128],
        ),
        (
            "realesrgan_x4plus",
            {"input": ["batch", 3, "height", "width"]},
            ["batch", 3, "out_height", "out_width"],
        ),
        (
            "realesrgan_x2plus",
            {"input": ["batch", 3, "height", "width"]},
            ["batch", 3, "out_height", "out_width"],
        ),
    ],
)
def test_onnx_io_contract(tiny_repo, name, inputs, output):
    model = onnx.load(str(tiny_repo / name / "1" / "model.onnx"))

    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    assert {i.name: dims(i) for i in model.graph.input} == inputs
    assert [o.name for o in model.graph.output] == ["output"]
    assert dims(model.graph.output[0]) == output
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for i in model.graph.input)
    props = {p.key: p.value for p in model.metadata_props}
    assert props["facecraft.trained"] == "false"
    assert props["facecraft.weights_source"] == "random"
    assert props["facecraft.model"] == name and props["facecraft.preset"] == "tiny"


@pytest.mark.parametrize("name", TINY_REPO_MODELS)
def test_parity_with_pytorch_at_batch_1_and_4(tiny_repo, name):
    meta = read_export_metadata(tiny_repo / name)
    spec = resolve(name, preset="tiny")
    model = random_model(spec, 0)  # same seed as the export: identical random weights
    session = _session(tiny_repo / name / "1" / "model.onnx")
    for batch in (1, 4):
        feeds = example_inputs(spec, batch, seed=100 + batch)
        with torch.inference_mode():
            expected = model(*(torch.from_numpy(feeds[t.name]) for t in spec.inputs)).numpy()
        (actual,) = session.run(["output"], feeds)
        assert actual.shape == spec.output_shape(feeds[spec.inputs[0].name].shape) == expected.shape
        assert np.abs(actual - expected).max() <= meta["parity"]["tolerance"]
        assert expected.std() > 1e-3  # not a saturated/constant output
    assert meta["parity"]["passed"] is True
    assert set(meta["parity"]["max_abs_diff"]) == {"1", "4"}


def test_codeformer_fidelity_changes_the_onnx_output(tiny_repo):
    session = _session(tiny_repo / "codeformer" / "1" / "model.onnx")
    x = example_inputs(resolve("codeformer", preset="tiny"), 1, seed=7)["input"]
    (w0,) = session.run(["output"], {"input": x, "w": np.zeros((1, 1), np.float32)})
    (w1,) = session.run(["output"], {"input": x, "w": np.ones((1, 1), np.float32)})
    assert np.abs(w0 - w1).max() > 1e-3


@pytest.mark.parametrize("name", TINY_REPO_MODELS)
def test_batch_items_are_independent(tiny_repo, name):
    spec = resolve(name, preset="tiny")
    session = _session(tiny_repo / name / "1" / "model.onnx")
    feeds = example_inputs(spec, 3, seed=11)
    (together,) = session.run(["output"], feeds)
    altered = {k: v.copy() for k, v in feeds.items()}
    first = spec.inputs[0].name
    altered[first][0] = (
        (1.0 - altered[first][0]) if name in NEW_MODELS[1:] else -altered[first][0]
    )  # item 0 only
    (changed,) = session.run(["output"], altered)
    assert np.abs(changed[0] - together[0]).max() > 1e-6
    np.testing.assert_allclose(changed[1:], together[1:], atol=1e-5)
    assert read_export_metadata(tiny_repo / name)["parity"]["batch_independence_max_abs_diff"] <= 1e-4


def test_export_json_record(tiny_repo):
    meta = read_export_metadata(tiny_repo / "u2net")
    assert meta["model"] == "u2net" and meta["variant"] == "u2net_human_seg" and meta["preset"] == "tiny"
    assert meta["weights_source"] == "random" and meta["trained"] is False and meta["seed"] == 0
    assert meta["opset"] == 17 and meta["fp16"] is False
    assert meta["parameter_count"] == 73_285
    import hashlib

    onnx_bytes = (tiny_repo / "u2net" / "1" / "model.onnx").read_bytes()
    assert meta["onnx_sha256"] == hashlib.sha256(onnx_bytes).hexdigest()
    assert meta["created"].endswith("+00:00") and meta["facecraft_version"]
    assert sorted(p.name for p in (tiny_repo / "u2net" / "1").iterdir()) == ["export.json", "model.onnx"]


def test_same_seed_same_bytes_other_seed_other_weights(tiny_repo, tmp_path):
    first = read_export_metadata(tiny_repo / "u2net")["onnx_sha256"]
    again = export_tiny("u2net", tmp_path / "a", seed=0).metadata["onnx_sha256"]
    other = export_tiny("u2net", tmp_path / "b", seed=1).metadata["onnx_sha256"]
    assert again == first
    assert other != first


def test_failed_parity_leaves_previous_export_untouched(tiny_repo, tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    export_tiny("u2net", repo)
    before = (repo / "u2net" / "1" / "model.onnx").read_bytes()
    meta_before = read_export_metadata(repo / "u2net")

    def failing(*args, **kwargs):
        raise ParityError("forced")

    monkeypatch.setattr(exporter, "check_parity", failing)
    with pytest.raises(ParityError):
        export_tiny("u2net", repo, seed=5)
    assert (repo / "u2net" / "1" / "model.onnx").read_bytes() == before
    assert read_export_metadata(repo / "u2net") == meta_before
    assert sorted(p.name for p in (repo / "u2net" / "1").iterdir()) == ["export.json", "model.onnx"]


def test_parity_check_catches_a_wrong_model(tiny_repo):
    from facecraft.export.parity import check_parity

    spec = resolve("u2net", preset="tiny")
    with pytest.raises(ParityError, match="parity"):  # other weights than the exported seed 0
        check_parity(
            random_model(spec, 123), tiny_repo / "u2net" / "1" / "model.onnx", spec, batch_sizes=(1,)
        )


def test_auto_falls_back_to_untrained_when_offline(tmp_path, monkeypatch):
    port = free_port()
    entry = weights.OFFICIAL_WEIGHTS["u2netp"]
    monkeypatch.setitem(
        weights.OFFICIAL_WEIGHTS,
        "u2netp",
        weights.OfficialWeights(**{**entry.__dict__, "url": f"http://127.0.0.1:{port}/u2netp.pth"}),
    )
    monkeypatch.setenv("FACECRAFT_CACHE_DIR", str(tmp_path))
    spec = resolve("u2net", "u2netp", "full")
    with pytest.warns(UntrainedWeightsWarning, match="UNTRAINED"):
        model, choice = load_weights(spec, "auto", seed=3, progress=False)
    assert choice.source == "random" and choice.trained is False and choice.seed == 3
    with pytest.raises(weights.DownloadError):
        load_weights(spec, "official", seed=3, progress=False)


def test_local_checkpoint_path_is_trained(tmp_path):
    spec = resolve("codeformer", preset="tiny")
    torch.manual_seed(9)
    path = tmp_path / "cf.pth"
    torch.save({"params_ema": build_model(spec).state_dict()}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntrainedWeightsWarning)
        model, choice = load_weights(spec, str(path), seed=0, progress=False)
    assert choice.source == "path" and choice.trained is True


def test_unknown_names_are_rejected(tmp_path):
    from facecraft.export.models import UnknownModelError

    for kwargs in (
        {"name": "gfpgan"},
        {"name": "u2net", "variant": "u2net_portrait"},
        {"name": "u2net", "preset": "huge"},
    ):
        with pytest.raises(UnknownModelError, match="choose one of"):
            export_model(**kwargs, weights="random", repo=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []
    assert json.dumps(MODEL_NAMES)


@pytest.mark.parametrize(
    ("name", "variant", "architecture"),
    [("u2net_general", "u2net", U2NET_FULL), ("u2netp", "u2netp", U2NETP)],
)
def test_the_segmentation_models_use_their_official_architecture(name, variant, architecture):
    spec = resolve(name)
    assert spec.variant == variant and spec.inputs == resolve("u2net").inputs
    assert spec.output == resolve("u2net").output
    full = build_model(spec)
    assert full.state_dict().keys() == U2Net(architecture).state_dict().keys()
    assert {k: v.shape for k, v in full.state_dict().items()} == {
        k: v.shape for k, v in U2Net(architecture).state_dict().items()
    }


def test_u2netp_exports_beside_u2net_with_a_derived_config_and_the_checkpoint_sha256(tmp_path):
    from facecraft.runtime.model_config import load_config

    repo = copy_model_repository(tmp_path / "repo")
    spec = resolve("u2netp", preset="tiny")
    torch.manual_seed(4)
    checkpoint = tmp_path / "u2netp.pth"
    torch.save(build_model(spec).state_dict(), checkpoint)
    result = export_model("u2netp", preset="tiny", weights=str(checkpoint), repo=repo, progress=False)
    record = json.loads((repo / "u2netp" / "1" / "export.json").read_text())
    assert record["variant"] == "u2netp" and record["weights_source"] == "path" and record["trained"]
    assert record["weights_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert result.onnx_path == repo / "u2netp" / "1" / "model.onnx"
    derived, template = (
        load_config(repo / "u2netp" / "config.pbtxt"),
        load_config(repo / "u2net" / "config.pbtxt"),
    )
    assert derived.name == "u2netp"
    assert derived.input == template.input and derived.output == template.output
    assert derived.instance_group == template.instance_group
    assert not (repo / "u2net" / "1" / "model.onnx").exists()  # u2net itself is untouched


def test_a_derived_model_needs_its_template_config(tmp_path):
    from facecraft.export.models import UnknownModelError

    with pytest.raises(UnknownModelError, match=r"u2net/config\.pbtxt"):
        export_model("u2net_general", preset="tiny", weights="random", repo=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["realesrgan_x4plus", "realesrgan_x2plus"])
def test_realesrgan_export_takes_any_size_and_scales_it(tiny_repo, name):
    spec = resolve(name, preset="tiny")
    model = random_model(spec, 0)
    session = _session(tiny_repo / name / "1" / "model.onnx")
    for height, width in ((16, 16), (30, 52)):  # neither is the size it was traced at
        x = np.random.default_rng(height).uniform(0, 1, (2, 3, height, width)).astype(np.float32)
        (out,) = session.run(["output"], {"input": x})
        assert out.shape == (2, 3, height * spec.scale, width * spec.scale)
        with torch.inference_mode():
            expected = model(torch.from_numpy(x)).numpy()
        assert np.abs(out - expected).max() <= 1e-3
        assert out.min() >= 0.0 and out.max() <= 1.0 and out.std() > 0.05  # calibrated, not saturated
    assert not any(n.op_type in ("SpaceToDepth", "DepthToSpace") for n in onnx.load(
        str(tiny_repo / name / "1" / "model.onnx")).graph.node)  # fmt: skip


def test_swap_stand_in_stores_a_seeded_emap_as_its_last_initializer(tiny_repo, tmp_path):
    from onnx import numpy_helper

    model = onnx.load(str(tiny_repo / "inswapper_128" / "1" / "model.onnx"))
    emap = numpy_helper.to_array(model.graph.initializer[-1])
    assert emap.shape == (512, 512) and emap.dtype == np.float32
    np.testing.assert_array_equal(emap, exporter.random_emap(0))
    assert not any("emap" in node.input for node in model.graph.node)  # the graph does not use it
    other = export_tiny("inswapper_128", tmp_path, seed=1)
    other_emap = numpy_helper.to_array(onnx.load(str(other.onnx_path)).graph.initializer[-1])
    assert not np.array_equal(other_emap, emap)


@pytest.mark.parametrize("name", NEW_MODELS)
def test_new_models_record_their_licence_and_untrained_state(tiny_repo, name):
    meta = read_export_metadata(tiny_repo / name)
    assert meta["trained"] is False and meta["weights_source"] == "random"
    assert meta["licence"]["commercial_use"] is (name.startswith("realesrgan"))
    props = {p.key: p.value for p in onnx.load(str(tiny_repo / name / "1" / "model.onnx")).metadata_props}
    assert props["facecraft.trained"] == "false"


def test_realesrgan_refuses_fp16_and_a_pth_cannot_become_a_swap_model(tmp_path):
    from facecraft.export.models import UnknownModelError

    with pytest.raises(UnknownModelError, match="fp16"):
        export_model(
            "realesrgan_x4plus", preset="tiny", weights="random", fp16=True, repo=tmp_path, progress=False
        )
    pth = tmp_path / "g.pth"
    torch.save({}, pth)
    with pytest.raises(weights.WeightsError, match="no emap"):
        export_model("inswapper_128", preset="tiny", weights=str(pth), repo=tmp_path, progress=False)
    assert not (tmp_path / "realesrgan_x4plus" / "1" / "model.onnx").exists()
    assert not (tmp_path / "inswapper_128" / "1" / "model.onnx").exists()


def test_realesrgan_params_ema_checkpoint_path_is_trained(tmp_path):
    spec = resolve("realesrgan_x2plus", preset="tiny")
    torch.manual_seed(2)
    path = tmp_path / "RealESRGAN_x2plus.pth"
    torch.save({"params_ema": build_model(spec).state_dict(), "params": {"junk": torch.zeros(1)}}, path)
    result = export_model(
        "realesrgan_x2plus", preset="tiny", weights=str(path), repo=tmp_path, progress=False
    )
    assert result.metadata["trained"] is True and result.metadata["weights_source"] == "path"


def test_onnx_only_models_fall_back_to_untrained_stand_ins_when_offline(tmp_path, monkeypatch):
    port = free_port()
    for name in ("arcface_w600k_r50", "inswapper_128"):
        entry = weights.OFFICIAL_WEIGHTS[name]
        unreachable = f"http://127.0.0.1:{port}/{name}"
        monkeypatch.setitem(
            weights.OFFICIAL_WEIGHTS,
            name,
            weights.OfficialWeights(
                **{**entry.__dict__, "url": unreachable + ".onnx", "hash_url": unreachable + ".hash"}
            ),
        )
    monkeypatch.setenv("FACECRAFT_CACHE_DIR", str(tmp_path))
    swap = resolve("inswapper_128", preset="full")
    assert exporter.published_onnx(swap, "auto", progress=False) is None  # offline: trace a stand-in
    with pytest.raises(weights.DownloadError):
        exporter.published_onnx(swap, "official", progress=False)
    with pytest.warns(UntrainedWeightsWarning, match="Official ONNX file unavailable"):
        _, choice = load_weights(resolve("arcface_w600k_r50", preset="full"), "auto", seed=2, progress=False)
    assert choice.source == "random" and choice.trained is False
