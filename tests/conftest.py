"""Shared pytest configuration.

Fixture modules live in ``tests/fixtures/`` (one per concern) and are registered here:

- ``images``: real photos (../shared/data/faces, the public-domain astronaut from scikit-image)
  and synthetic images.
- ``triton``: tiny ONNX exports + a real embedded Triton server for the session.
- ``gateway``: the FastAPI gateway running against that Triton (and ``facecraft worker`` processes).
- ``redis``: a real ``redis-server`` for the Redis job backend.
- ``exported``: the face-swap and Real-ESRGAN models exported into the session Triton (module scope).
"""

pytest_plugins = [
    "tests.fixtures.images",
    "tests.fixtures.triton",
    "tests.fixtures.gateway",
    "tests.fixtures.redis",
    "tests.fixtures.exported",
]
