"""Shared fixtures: the policy tokenizer (the embedded SmolLM2's) and a poison-token world."""

import pytest


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    from counterpoint.generators.embedded import embedded_model_dir

    return AutoTokenizer.from_pretrained(embedded_model_dir())


@pytest.fixture(scope="session")
def poison_id(tokenizer):
    from counterpoint.testing.critical import POISON

    ids = tokenizer(POISON, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1
    return ids[0]
