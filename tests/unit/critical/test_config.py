"""The ``critical_tokens`` run-config section and its flags."""

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from counterpoint.config import from_dict
from counterpoint.errors import ConfigError
from counterpoint.pipelines.generate_corpus import resolve_config


def test_flags_set_the_section_and_the_config_is_written():
    cfg = resolve_config(PipelineOptions(["--labeler", "omegaprm", "--critical-tokens", "gs://b/cm", "--critical-k", "6",
                                          "--critical-ban-rollouts", "0", "--critical-top-k", "2",
                                          "--no-critical-search", "--critical-beta", "0.5"]))
    c = cfg.critical_tokens
    assert (c.enabled, c.contrast_models, c.k, c.ban_rollouts, c.top_k, c.search, c.beta) == (
        True, "gs://b/cm", 6, 0, 2, False, 0.5)
    assert cfg.configs()[-1] == "critical_tokens"
    assert from_dict(cfg.to_dict()).critical_tokens == c  # the stored config loads back
    plain = resolve_config(PipelineOptions(["--labeler", "omegaprm"]))
    assert "critical_tokens" not in plain.configs() and plain.output_fingerprint() != cfg.output_fingerprint()


def test_bad_sections_name_the_fix():
    with pytest.raises(ConfigError, match="--critical-tokens"):
        resolve_config(PipelineOptions(["--critical-tokens", "cm"]))  # no labeller
    with pytest.raises(ConfigError, match="contrast-models"):
        from_dict({"labeler": "omegaprm", "critical_tokens": {"enabled": True}})
    with pytest.raises(ConfigError, match="critical_tokens.k"):
        from_dict({"labeler": "omegaprm", "critical_tokens": {"k": 0}})
    with pytest.raises(ConfigError, match="unknown CriticalTokensConfig key"):
        from_dict({"critical_tokens": {"rollouts": 3}})
