"""Facecraft: face-portrait service served as an NVIDIA Triton ensemble.

One import namespace for the whole project:

- ``facecraft.pipeline``  pure image math shared by the Triton Python models (``pipeline/``)
- ``facecraft.export``    CodeFormer / U2-Net definitions, weights, ONNX export (``export/``)
- ``facecraft.runtime``   embedded Triton launcher and model-repository tooling
- ``facecraft.gateway``   FastAPI gateway with the Facecraft REST contract (``gateway/``)
- ``facecraft.client``    Python client, ``facecraft process`` (``client/``)
- ``facecraft.bench``     benchmark harness: ``facecraft bench``, ``perf-data``, perf_analyzer (``bench/``)
"""

__version__ = "0.1.0"
