"""The benchmark harness: ``facecraft bench`` (sequential pipeline vs Triton gRPC vs the gateway,
one report), ``facecraft perf-data`` and Triton's ``perf_analyzer`` installer.

Modules: ``harness`` (the run), ``load`` (bounded load generators), ``machine`` (machine facts,
conv probe, MAC counts, RSS), ``stats`` (Triton statistics diffs), ``report`` (JSON + Markdown),
``sequential`` (the in-process baseline), ``perf_data`` / ``perf_analyzer``.
"""
