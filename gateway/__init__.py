"""The Facecraft REST gateway over Triton (FastAPI).

``create_app(settings)`` in :mod:`facecraft.gateway.app` builds the app; ``python -m
facecraft.gateway`` serves it with uvicorn. See docs/api.md for the contract.
"""
