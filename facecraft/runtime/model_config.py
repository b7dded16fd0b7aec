"""Read and write Triton ``config.pbtxt`` files as ``ModelConfig`` messages (Protocol Buffers text format).

``ModelConfig`` is Triton's own message (``tritonclient.grpc.model_config_pb2``, from the ``server``
extra); ``google.protobuf.text_format`` parses and prints it, so strings, comments, nesting and
escapes are handled by the library that defines the format. ``format_config`` prints the canonical
form (comments are not kept): ``format_config(parse_config(text))`` is a fixed point of the parser.
"""

from __future__ import annotations

import os
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

ModelConfig = model_config_pb2.ModelConfig
ModelInstanceGroup = model_config_pb2.ModelInstanceGroup


class ConfigEditError(ValueError):
    """A ``config.pbtxt`` could not be read or edited (not a valid ``ModelConfig``, bad arguments)."""


def parse_config(text: str, source: str | os.PathLike = "config.pbtxt") -> ModelConfig:
    """``text`` (Protocol Buffers text format) as a ``ModelConfig``.

    Raises ``ConfigEditError`` naming ``source`` and the parser's ``line:column : reason`` when the
    text does not parse (unbalanced brackets, unterminated strings, unknown fields, bad enum values).
    """
    try:
        return text_format.Parse(text, ModelConfig())
    except text_format.ParseError as error:
        raise ConfigEditError(f"{source}: not a valid Triton model configuration: {error}") from error


def load_config(path: str | os.PathLike) -> ModelConfig:
    """The ``config.pbtxt`` at ``path`` as a ``ModelConfig`` (``ConfigEditError`` as ``parse_config``;
    ``OSError`` when it cannot be read)."""
    return parse_config(Path(path).read_text(), path)


def format_config(config: ModelConfig) -> str:
    """``config`` in canonical text format (fields in message order, one per line, repeated scalars as
    ``[a, b]``, map entries sorted by key); ``parse_config`` gives ``config`` back."""
    return text_format.MessageToString(config, use_short_repeated_primitives=True)
