"""Critical tokens (issue 21): cDPO's token-level negatives ("Critical Tokens Matter", arXiv 2411.19943).

Contrast models fine-tuned on a run's own verified positives and negatives (:mod:`.train`), their
contrastive scores of every token of an incorrect trajectory, and the rollout-verified critical token.
"""
