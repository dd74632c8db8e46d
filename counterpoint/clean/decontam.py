"""Problem decontamination against evaluation sets (Beam-free; wired by counterpoint.transforms.clean).

A problem (or a Step-DPO prompt: question + shared prefix) is contaminated by an evaluation item when

* **exact**: their texts are equal after :func:`counterpoint.clean.text.normalize` (case, whitespace,
  punctuation, number formats), or equal once numbers are masked *and* their numbers are the same
  multiset (the item with its numbers reordered); or
* **n-gram**: the share of the problem's word n-grams found in one item is above ``threshold``
  (``0``: a single shared n-gram is enough). The public rules, offered as presets:

  - ``lm-eval`` — EleutherAI lm-evaluation-harness ``decontaminate`` (after GPT-3, Brown et al. 2020, App. C):
    **13-gram** word overlap, any shared 13-gram flags the item; a text shorter than 13 words is one n-gram.
  - ``open-r1`` — Hugging Face open-r1 ``scripts/decontaminate.py``: **8-gram** word overlap, any shared
    8-gram flags the problem.

Embedding similarity is not implemented (left for later: it needs a model on every worker).

The index is built from every item of the evaluation sets and broadcast to the workers as one side
input: evaluation sets are small (GSM8K test 1,319, MATH-500 500 items: ~10^5 n-gram hashes, a few MB),
while the corpus is large. A side input costs one copy of the index per worker and leaves the corpus
where it is; a ``CoGroupByKey`` on n-gram keys would shuffle every n-gram of every problem (~50x the
corpus) to find the few that match. Hashes are 64-bit (blake2b), so the index never holds benchmark text
beyond a snippet per item.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from counterpoint.clean import text as T

RULES: Dict[str, int] = {"lm-eval": 13, "open-r1": 8}
SNIPPET_CHARS = 120
# Fields tried, in order, for an evaluation item's question and id (any source format the file source reads).
QUESTION_FIELDS = ("question", "problem", "prompt", "input", "query", "text")
ID_FIELDS = ("id", "unique_id", "problem_id", "task_id", "idx")


@dataclasses.dataclass
class DecontaminationConfig:
    """``decontamination:`` in the run config (``--decontaminate PATH``, ``--decontamination-rule``).

    ``paths``: evaluation files or globs (JSONL/JSON/Parquet, compressed, local/gs:///s3://).
    ``names``: a benchmark name per path (default: the file stem). ``rule``: ``lm-eval`` (13-gram) or
    ``open-r1`` (8-gram); ``ngram`` overrides its n. ``threshold``: share of the problem's n-grams an item
    must hold to match (0 = any one). ``step_prompts``: also check Step-DPO prompts (question + prefix).
    """

    paths: List[str] = dataclasses.field(default_factory=list)
    names: List[str] = dataclasses.field(default_factory=list)
    rule: str = "lm-eval"
    ngram: Optional[int] = None
    threshold: float = 0.0
    step_prompts: bool = True

    def __post_init__(self):
        if self.rule not in RULES:
            raise ValueError(f"decontamination.rule: unknown rule {self.rule!r}; choose one of {sorted(RULES)}")
        if self.ngram is not None and self.ngram < 1:
            raise ValueError(f"decontamination.ngram must be >= 1 (or null for the rule's), got {self.ngram}")
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"decontamination.threshold must be in [0, 1), got {self.threshold}")
        if self.names and len(self.names) != len(self.paths):
            raise ValueError(f"decontamination.names: {len(self.names)} name(s) for {len(self.paths)} path(s); "
                             "give one per path or none")

    def check(self) -> None:
        """Every path or glob matches at least one file (Beam filesystems: gs://, s3:// too), in the driver."""
        import os

        from counterpoint import storage
        from counterpoint.errors import ConfigError

        for path in self.paths:
            local = path[len("file://"):] if path.startswith("file://") else path
            local = local if "://" in local else os.path.expanduser(local)
            try:
                found = [p for p, _ in storage.match_sizes(local) if not p.endswith("/")]
            except Exception as e:  # noqa: BLE001 - an unlistable bucket is a usage error here
                raise ConfigError(f"--decontaminate {path}: cannot list it ({type(e).__name__}: {e}); check the "
                                  "path and credentials") from None
            if not found:
                raise ConfigError(f"--decontaminate {path}: no file matches; check the path or glob "
                                  "(nothing was read or written)")

    @property
    def enabled(self) -> bool:
        return bool(self.paths)

    @property
    def n(self) -> int:
        return self.ngram or RULES[self.rule]

    def name_of(self, index: int, path: str) -> str:
        from counterpoint.sources.files import default_source_name

        return self.names[index] if self.names else default_source_name(path)


@dataclasses.dataclass(frozen=True)
class EvalItem:
    benchmark: str
    item_id: str
    question: str


@dataclasses.dataclass(frozen=True)
class Match:
    benchmark: str
    item_id: str
    snippet: str
    kind: str  # exact | numbers_reordered | ngram
    overlap: float  # share of the problem's n-grams found in the item (1.0 for exact kinds)

    def detail(self, n: int) -> str:
        how = {"exact": "exact after normalisation", "numbers_reordered": "same text, numbers reordered",
               "ngram": f"{self.overlap:.0%} of its {n}-grams shared"}[self.kind]
        return f"{self.benchmark} item {self.item_id!r} ({how}): {self.snippet!r}"


def _h(s: str) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little")


def _reordered_key(toks: List[str]) -> str:
    return T.masked(toks) + " | " + " ".join(sorted(T.numbers(toks)))


# ---------------------------------------------------------------------------
# Reading evaluation files (workers): any format the file source reads
# ---------------------------------------------------------------------------
def read_eval_file(path: str, benchmark: str) -> Iterator[EvalItem]:
    """Every item of one evaluation file, through the file source's readers (formats, compression, remote).

    The question field is the first of :data:`QUESTION_FIELDS` the file's first record has (the field read
    as both question and answer, so no gold answer is needed); the id is the first of :data:`ID_FIELDS`.
    """
    from counterpoint.sources.files import read_problem_file
    from counterpoint.sources.mapping import FieldMapping

    import json

    for qfield in QUESTION_FIELDS:
        mapping = FieldMapping(question=qfield, answer=qfield, gold_format="plain")
        first = next(iter(read_problem_file(path, mapping)), None)
        if first is None:
            return
        if first[0] != "problem":
            continue
        for kind, row in read_problem_file(path, mapping):
            if kind == "problem":
                extra = json.loads(row["metadata"]).get("extra") or {}
                item_id = next((str(extra[f]) for f in ID_FIELDS if extra.get(f) is not None), row["problem_id"])
                yield EvalItem(benchmark, item_id, row["question"])
        return


# ---------------------------------------------------------------------------
# The index (built once, broadcast) and the check
# ---------------------------------------------------------------------------
class EvalIndex:
    """Hashes of every evaluation item's normalised text, numbers-reordered key and word n-grams."""

    def __init__(self, items: Iterable[EvalItem], n: int, threshold: float = 0.0):
        self.n = n
        self.threshold = threshold
        self.items: List[Tuple[str, str, str]] = []
        self.exact: Dict[int, int] = {}
        self.reordered: Dict[int, int] = {}
        self.grams: Dict[int, List[int]] = {}
        for it in sorted(items, key=lambda it: (it.benchmark, it.item_id)):
            self._add(it)

    def _add(self, it: EvalItem) -> None:
        toks = T.tokens(it.question)
        if not toks:
            return
        i = len(self.items)
        self.items.append((it.benchmark, it.item_id, " ".join(it.question.split())[:SNIPPET_CHARS]))
        self.exact.setdefault(_h(" ".join(toks)), i)
        self.reordered.setdefault(_h(_reordered_key(toks)), i)
        for g in set(T.word_ngrams(toks, self.n)):
            self.grams.setdefault(_h(g), []).append(i)

    def __len__(self) -> int:
        return len(self.items)

    def _match(self, i: int, kind: str, overlap: float) -> Match:
        bench, item_id, snippet = self.items[i]
        return Match(bench, item_id, snippet, kind, overlap)

    def check(self, question: str) -> Optional[Match]:
        """The evaluation item ``question`` matches (exact first, then the largest n-gram overlap), or None."""
        toks = T.tokens(question)
        if not toks:
            return None
        for table, kind in ((self.exact, "exact"), (self.reordered, "numbers_reordered")):
            key = " ".join(toks) if kind == "exact" else _reordered_key(toks)
            i = table.get(_h(key))
            if i is not None:
                return self._match(i, kind, 1.0)
        grams = set(T.word_ngrams(toks, self.n))
        shared: Counter = Counter()
        for g in grams:
            for i in self.grams.get(_h(g), ()):
                shared[i] += 1
        if not shared:
            return None
        i, count = min(shared.items(), key=lambda kv: (-kv[1], kv[0]))
        overlap = count / len(grams)
        return self._match(i, "ngram", overlap) if overlap > self.threshold else None


def step_prompt_text(question: str, prefix: Optional[str]) -> str:
    """What a Step-DPO prompt shows the model: the question and the shared solution prefix."""
    return question + ("\n" + prefix if prefix else "")


def contaminated_step_pairs(preferences: Sequence[Dict[str, Any]], question: str,
                            index: EvalIndex) -> List[Tuple[Dict[str, Any], Match]]:
    """The step / first-pit pairs whose prompt (question + prefix) matches an evaluation item."""
    out = []
    for p in preferences:
        if p.get("prefix"):
            m = index.check(step_prompt_text(question, p["prefix"]))
            if m is not None:
                out.append((p, m))
    return out
