"""Test-session settings: offline Hub, quiet logs, and the `vllm` marker.

Layout: ``tests/unit/<package>/`` tests one package of ``counterpoint/`` (a scripted pipeline run
where the package's behaviour only shows in one); ``tests/pipeline/`` runs whole jobs (end to end,
reliability, distributed topologies, the Dataflow dry run, publishing safety, training, the real
engine). Shared helpers (``_paths``, ``_fakes``, ``_tiny_model``) and ``data/`` sit in ``tests/``.

Tests never need the network or ../shared: they make their own data. Beam
runners are always pinned (FnApiRunner): Beam 2.77's DirectRunner would first try
to download the Prism binary.
"""

import os
import sys
import tempfile

# The shared helpers import from any test folder.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# A fresh datasets cache per session: pytest reuses tmp paths across sessions, and a cached
# build of an old output folder at the same path must never answer for a new one.
os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="cp-hf-datasets-")


def pytest_configure(config):
    config.addinivalue_line("markers", "vllm: runs the real vLLM engine on the embedded model (one engine per session)")
    config.addinivalue_line("markers", "vllm_server: starts vLLM's OpenAI-compatible server (opt-in)")
