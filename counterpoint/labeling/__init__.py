"""Beam-free step labelling: OmegaPRM trees, per-step MC baseline, values/advantages, pairs, consensus.

Everything here is plain Python driven by :class:`RoundScheduler`; the Beam
wrapper calls :func:`label_problems` (and, for the consensus stage,
``consensus.judge_requests`` / ``parse_judgement`` / ``apply_consensus``).

Label semantics (the one place they are written down)
------------------------------------------------------
One **evidence store** per problem (``evidence.EvidenceStore``) holds every
rollout by exact prefix, the verdict of every verified text, and a trie of the
step tuples of every verified-correct completion (sampled trajectories and
rollouts; a rollout's steps are its prefix's steps + the continuation's), keyed on
step content with whitespace normalised (a continuation may start with "", "\n"
or "\n\n": the labels are the same).
Labellers, values and pairs all read it; rows are built once, after every search
and value estimate of the problem has finished.

For a wrong solution ``W`` with steps ``s_0 .. s_{m-1}`` the first error is

* ``e_search`` — what the labeller found: OmegaPRM's binary search, or for the
  per-step MC baseline 1 + the last step whose prefix has MC > 0 (Math-Shepherd's
  ``v_i = MC(steps[:i+1])``; the raw hard estimate ``v_i > 0`` stays recoverable
  from ``mc_values`` + ``mc_measured``);
* ``e_evidence = 1 + max{j : some verified-correct completion starts with
  W.steps[:j+1]}`` (0 if none): a correct trajectory or rollout through a prefix
  proves its steps right;
* ``e_value = max(e_search, e_evidence)`` — evidence only moves the error later;
* **terminal prefixes**: a prefix whose LAST step states a final answer in the
  verifier's marker grammar (``verifiers.extract.states_final_answer``: ``\\boxed{}``,
  a "#### 42" answer line, "The answer is 42", "Final answer: 42" — never a
  markdown heading or prose about "the answer") is judged by the verifier as it
  stands. A verdict that is step evidence (correct, or a wrong stated answer) is
  exact (1.0 / 0.0, no rollouts) and no continuation can "rescue" a stated wrong
  answer; a format-class or unknown verdict is no evidence and the prefix is
  rolled out like any other. ``e_terminal`` = the first step whose prefix states an
  answer judged wrong;
* **arithmetic claims**: explicit ``a op b = c`` claims are checked exactly as
  models write them (``arithmetic``: LaTeX, lists, money, percentages, rounding);
  ``e_claim`` = the first step with a false one at or after ``e_evidence`` (a claim
  never cuts below a verified-correct completion; the row's ``claim_overruled``
  says when it would have; ``claims_over_evidence`` restores issue 9's rule);
* ``e = min(e_value, e_terminal, e_claim, m - 1)`` (the last step is the whole
  wrong solution: its value is its verdict, 0); ``labels = [i < e]`` — monotone,
  first-error labels as TRL's stepwise supervision expects. ``first_error_source``
  says which term decided.

Estimates: MC = correct / known (unknown verdicts excluded). An estimate is
**resolved** iff it has a correct rollout (proof) or at least
``min_known_verdicts`` known verdicts (default ``ceil(k/2)``): "7 unknown + 1
incorrect" is unresolved, never a confident 0. An unresolved probe stops a search;
the solution becomes a row-scope reject (``label_unresolved_probe``) unless the
evidence, a stated wrong answer or a false claim decides its first error anyway.

Format failures (the format-class reasons, ``verifiers.base.is_format_failure``):
outcome negatives, never step-level evidence — such a sampled solution gets no
``step_labels`` row, no step pair, no first-pit pair and no ``step_values``
(counted, and a ``label_format_failure`` reject). A rollout that is a format
failure counts as "did not reach the gold answer" in MC under
``rollout_format_failures: zero`` (default; Math-Shepherd's and OmegaPRM's
semantics) or as an unknown verdict under ``unknown``; either way it never joins
OmegaPRM's candidate pool, and every step-label and step-value row counts its
format-failure and truncated rollouts. Truncated samples count as wrong and are
never searched.

Rollouts inherit the run's sampling (``sampling=`` of :func:`label_problems`)
unless ``omegaprm.rollout_params`` is set; ``labeler_params`` records the
effective parameters and everything else the labels depend on — and none of the
throughput knobs (``overlap_values``, ``parallel_searches``, ``max_trees``,
``max_inflight_samples``), on which no row depends.
"""

from counterpoint.labeling.advantages import StepValue, best_of_k_value, step_values, within_noise
from counterpoint.labeling.arithmetic import Claim, claims, false_claims, first_false_claim_step
from counterpoint.labeling.common import LabeledSolution, fill_mc_values
from counterpoint.labeling.consensus import (
    CONSENSUS_MODES,
    ConsensusConfig,
    apply_consensus,
    judge_requests,
    judgements_from,
    parse_judgement,
)
from counterpoint.labeling.evidence import EvidenceStore
from counterpoint.labeling.first_error import FirstError, decide
from counterpoint.labeling.labeler import (
    LABELERS,
    LabelerConfig,
    LabelingResult,
    ProblemForLabeling,
    label_problems,
)
from counterpoint.labeling.omegaprm import OmegaPRMConfig, OmegaPRMTree
from counterpoint.labeling.scheduler import (
    Estimate,
    ProblemContext,
    Rollout,
    RolloutAsk,
    RoundScheduler,
    VerifyFn,
)

__all__ = [
    "CONSENSUS_MODES",
    "Claim",
    "ConsensusConfig",
    "Estimate",
    "EvidenceStore",
    "FirstError",
    "LABELERS",
    "LabeledSolution",
    "LabelerConfig",
    "LabelingResult",
    "OmegaPRMConfig",
    "OmegaPRMTree",
    "ProblemContext",
    "ProblemForLabeling",
    "Rollout",
    "RolloutAsk",
    "RoundScheduler",
    "StepValue",
    "VerifyFn",
    "apply_consensus",
    "best_of_k_value",
    "claims",
    "decide",
    "false_claims",
    "fill_mc_values",
    "first_false_claim_step",
    "judge_requests",
    "judgements_from",
    "label_problems",
    "parse_judgement",
    "step_values",
    "within_noise",
]
