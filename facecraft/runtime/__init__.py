"""The embedded Triton runtime (``facecraft.runtime``): ``facecraft serve`` and its parts.

- ``server.TritonServer``: launch, readiness, restart and clean stop of ``tritonserver`` from the
  ``nvidia-pytriton`` wheel; ``backends``/``discovery``/``environment`` assemble what it needs;
- ``onnxruntime_backend``: the Python-based ``onnxruntime`` backend the wheel lacks;
- ``instance_plan`` / ``instance_groups`` / ``model_config``: the CPU/GPU instance plan written
  into a runtime copy of the model repository (``ModelConfig`` messages);
- ``ports`` / ``http_probe``: free ports, port checks and readiness proven from the listening socket;
- ``serve`` / ``cli``: ``facecraft serve`` and ``facecraft repo configure``.

docs/runtime.md describes it.
"""
