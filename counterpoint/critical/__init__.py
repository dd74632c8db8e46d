"""Critical tokens (issue 21): cDPO's contrastive estimation and rollout-verified critical tokens.

Floor 6 (beside ``labeling``). Beam-free: :mod:`contrast` (the estimator and token weights),
:mod:`scorer` (the two contrast models, loaded lazily), :mod:`search` (the rollout search inside
OmegaPRM's first wrong step and the ban test), :mod:`rows` (``critical_tokens`` rows). The Beam stage
is :mod:`counterpoint.transforms.critical`; see docs/critical_tokens.md.
"""
