"""Test-session settings: offline Hub, quiet logs, and the `vllm` marker.

Tests never need the network or ../shared: they make their own data. Beam
runners are always pinned (FnApiRunner): Beam 2.77's DirectRunner would first try
to download the Prism binary.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config):
    config.addinivalue_line("markers", "vllm: runs the real vLLM engine on the embedded model (one engine per session)")
    config.addinivalue_line("markers", "vllm_server: starts vLLM's OpenAI-compatible server (opt-in)")
