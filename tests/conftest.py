"""Test-session settings: offline Hub, quiet logs, and the `vllm` marker.

Tests never need the network or ../shared: they make their own data. Beam
runners are always pinned (FnApiRunner): Beam 2.77's DirectRunner would first try
to download the Prism binary.
"""

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# A fresh datasets cache per session: pytest reuses tmp paths across sessions, and a cached
# build of an old output folder at the same path must never answer for a new one.
os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="cp-hf-datasets-")


def pytest_configure(config):
    config.addinivalue_line("markers", "vllm: runs the real vLLM engine on the embedded model (one engine per session)")
    config.addinivalue_line("markers", "vllm_server: starts vLLM's OpenAI-compatible server (opt-in)")
