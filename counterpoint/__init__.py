"""Counterpoint: positive/negative training corpora for LLM reasoning, built with Beam and vLLM."""

__version__ = "0.1.0"
