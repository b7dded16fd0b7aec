"""The processors registry (facecraft.processors): options, validation, chains, the docs table."""

from __future__ import annotations

from pathlib import Path

import pytest

from facecraft import processors
from facecraft.pipeline import options as portrait_options

DOCS = Path(__file__).resolve().parents[1] / "docs" / "processors.md"


def test_every_processor_is_listed_portrait_first():
    assert processors.names() == (
        "portrait", "face_enhancer", "background_remover", "frame_enhancer", "face_swapper", "face_analyser",
    )  # fmt: skip
    for processor in processors.PROCESSORS.values():
        described = processor.as_dict()
        assert described["name"] == processor.name and described["options"]
        assert described["ensembles"] and described["models"]


def test_unknown_processor_names_the_valid_ones():
    with pytest.raises(KeyError, match="face_enhancer, background_remover"):
        processors.get("face_morpher")


def test_portrait_ranges_are_the_pipeline_ones():
    portrait = processors.get("portrait")
    assert (portrait.option("width").low, portrait.option("width").high) == (
        portrait_options.MIN_SIDE,
        portrait_options.MAX_SIDE,
    )
    assert portrait.option("max_jpeg_kb").high == portrait_options.MAX_JPEG_KB
    assert portrait.option("fidelity").default == portrait_options.DEFAULT_FIDELITY


@pytest.mark.parametrize(
    ("processor", "values", "expected"),
    [
        ("face_enhancer", {"fidelity": "0.25", "max_faces": "3"}, {"fidelity": 0.25, "max_faces": 3}),
        ("background_remover", {"background": "#FF8000"}, {"background": (255, 128, 0)}),
        ("background_remover", {"background": "1, 2, 3", "mask_only": "true"}, {"background": (1, 2, 3), "mask_only": True}),
        ("face_analyser", {"annotate": "0"}, {"annotate": False}),
        ("face_enhancer", {"format": "JPEG"}, {"format": "jpeg"}),
        ("face_enhancer", {"background_enhance": "yes"}, {"background_enhance": True}),
        ("frame_enhancer", {"scale": "2", "tile": "128", "overlap": "0"}, {"scale": "2", "tile": 128, "overlap": 0}),
    ],
)  # fmt: skip
def test_options_parse_form_strings(processor, values, expected):
    resolved = processors.get(processor).resolve(values)
    assert {name: resolved[name] for name in expected} == expected


@pytest.mark.parametrize(
    ("processor", "values", "option", "message"),
    [
        ("face_enhancer", {"fidelity": "1.5"}, "fidelity", "outside 0.0..1.0"),
        ("face_enhancer", {"max_faces": "2.5"}, "max_faces", "an integer"),
        ("face_enhancer", {"max_faces": "0"}, "max_faces", "outside 1..32"),
        ("face_enhancer", {"blend": "nan"}, "blend", "a number"),
        ("background_remover", {"model": "birefnet"}, "model", "u2net_human_seg, u2net, u2netp"),
        ("background_remover", {"background": "#12345"}, "background", "#rrggbb"),
        ("background_remover", {"background": "1,2,300"}, "background", "0..255"),
        ("face_analyser", {"annotate": "maybe"}, "annotate", "true or false"),
        ("face_analyser", {"colour": "1"}, "colour", "options: max_faces, min_face_size, annotate"),
    ],
)  # fmt: skip
def test_bad_options_name_the_option(processor, values, option, message):
    with pytest.raises(processors.OptionError, match=message) as caught:
        processors.get(processor).resolve(values)
    assert caught.value.option == option


def test_chains_are_ordered_and_json_only_ends_one():
    assert processors.parse_chain(" face_enhancer, background_remover ") == (
        "face_enhancer",
        "background_remover",
    )
    with pytest.raises(ValueError, match="only end a chain"):
        processors.parse_chain("face_analyser,face_enhancer")
    with pytest.raises(KeyError, match="unknown processor"):
        processors.parse_chain("face_enhancer,nope")
    with pytest.raises(ValueError, match="empty"):
        processors.parse_chain(" , ")


def test_docs_table_is_generated_from_the_registry():
    document = DOCS.read_text(encoding="utf-8")
    assert processors.with_table(document) == document, "run `python -m facecraft.processors`"
    for name in processors.names():
        assert f"`{name}`" in processors.markdown_table()


def test_table_generator_needs_its_markers():
    with pytest.raises(ValueError, match="markers"):
        processors.with_table("# no markers here\n")
