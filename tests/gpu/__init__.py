"""CUDA tests: every method trains, resumes, merges and reloads on a GPU under the GPU precision policy.

Skipped without CUDA; ``SPARSETUNE_GPU_TESTS_ON_CPU=1`` runs the same tests on the CPU (bf16 policy there
too), which is how they are checked on machines without a GPU. ``scripts/gpu_check.sh`` runs them on a GPU.
The tiny models are built from configs with the tokenizers committed under ``tests/assets`` (a GPU machine
has no network and no packaged models).
"""
