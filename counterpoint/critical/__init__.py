"""Critical tokens (issue 21): cDPO's token-level negatives ("Critical Tokens Matter", arXiv 2411.19943).

Floor 6 (beside ``labeling``). Beam-free: :mod:`train` (contrast models fine-tuned on a run's own verified
positives and negatives), :mod:`contrast` (the estimator and token weights), :mod:`scorer` (the two contrast
models, loaded lazily), :mod:`search` (the rollout search inside OmegaPRM's first wrong step and the ban
test), :mod:`rows` (``critical_tokens`` rows). The Beam stage is :mod:`counterpoint.transforms.critical`;
see docs/critical_tokens.md.
"""
