"""Small Triton models built on the fly for runtime tests (independent of the real repository).

- ``add_one`` (backend ``onnxruntime``): ONNX graph ``y = x + 1`` on FP32 ``[-1, 4]`` with dynamic
  batching (``max_batch_size: 8``, a queue delay so concurrent requests meet in one batch).
- ``env_probe`` (backend ``python``): returns, as BYTES, the JSON facts its stub sees (Python
  executable, whether ``facecraft.pipeline`` imports), to check the server environment.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

ADD_ONE_CONFIG = """\
name: "add_one"
backend: "onnxruntime"
max_batch_size: 8
input [ {{ name: "x", data_type: TYPE_FP32, dims: [ 4 ] }} ]
output [ {{ name: "y", data_type: TYPE_FP32, dims: [ 4 ] }} ]
dynamic_batching {{ max_queue_delay_microseconds: {delay_us} }}
instance_group [ {{ kind: {kind}, count: 1 }} ]
"""

ENV_PROBE_CONFIG = """\
name: "env_probe"
backend: "python"
max_batch_size: 0
input [ { name: "DUMMY", data_type: TYPE_INT32, dims: [ 1 ] } ]
output [ { name: "FACTS", data_type: TYPE_STRING, dims: [ 1 ] } ]
instance_group [ { kind: KIND_CPU, count: 1 } ]
"""

ENV_PROBE_MODEL = textwrap.dedent(
    """
    import json
    import sys

    import numpy as np
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def execute(self, requests):
            try:
                import facecraft.pipeline  # noqa: F401

                pipeline = "ok"
            except Exception as error:  # reported to the test, not raised
                pipeline = repr(error)
            facts = {"executable": sys.executable, "prefix": sys.prefix, "pipeline_import": pipeline,
                     "version": list(sys.version_info[:2])}
            data = np.array([json.dumps(facts).encode()], dtype=np.object_)
            return [pb_utils.InferenceResponse([pb_utils.Tensor("FACTS", data)]) for _ in requests]
    """
)


def write_add_one_onnx(path: Path, width: int | None = 4) -> None:
    """Write the ONNX graph ``y = x + 1`` (FP32, shape ``[N, width]``; ``None``: any width) to ``path``."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    one = numpy_helper.from_array(np.ones((1, 1), dtype=np.float32), name="one")
    dims = ["N", width if width is not None else "W"]
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "one"], ["y"])],
        "add_one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)],
        initializer=[one],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def build_small_repository(root: Path, *, kind: str = "KIND_CPU", delay_us: int = 500_000) -> Path:
    """Create ``root`` with ``add_one`` and ``env_probe``; return it."""
    add_one = root / "add_one"
    write_add_one_onnx(add_one / "1" / "model.onnx")
    (add_one / "config.pbtxt").write_text(ADD_ONE_CONFIG.format(kind=kind, delay_us=delay_us))
    probe = root / "env_probe"
    (probe / "1").mkdir(parents=True, exist_ok=True)
    (probe / "1" / "model.py").write_text(ENV_PROBE_MODEL)
    (probe / "config.pbtxt").write_text(ENV_PROBE_CONFIG)
    return root
