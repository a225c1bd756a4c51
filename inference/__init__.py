"""The inference process: base models kept loaded, fine-tuned adapters applied on them in place, generation
and classification served over an internal HTTP port that the API forwards to (``sparsetune serve``).

Torch-side like the worker; the API never imports it. ``requests`` holds what a caller hands the engine,
``engine`` the scheduler thread, ``hosts`` the loaded models and their adapters (smt_core.serving applies
them), ``decode`` sampling and incremental text.
"""
