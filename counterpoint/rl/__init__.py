"""RL-ready statistics of a corpus, Beam-free (floor 6 of the layer order: imports schemas only).

* :mod:`counterpoint.rl.stats` — the ``problem_stats`` row of one problem (pass rate with its
  95% Wilson score interval, verdict-reason histogram, answers given);
* :mod:`counterpoint.rl.signed` — per-trajectory reward, group mean, GRPO and RLOO advantages;
* :mod:`counterpoint.rl.band` — options of the RL exports (pass-rate band, control, positives cap);
* :mod:`counterpoint.rl.npo` — the NPO loss (Zhang et al. 2024) for the ``npo_forget`` export (torch, lazily).

The pipeline applies both where a problem's samples and verdicts are together
(``counterpoint.transforms.write``); exports and trainers read the written columns.
"""
