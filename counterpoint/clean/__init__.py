"""Clean corpora (issue 20): decontamination against evaluation sets, number-aware trajectory dedup,
near-miss pairing with two-sided guards, reference solutions. Beam-free; wired in ``counterpoint.transforms.clean``."""
