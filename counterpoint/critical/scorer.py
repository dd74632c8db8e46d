"""The two contrast models: every completion token's log-probability under each, and the cDPO score.

Input: a contrast-models directory (``counterpoint contrast-models``: ``positive/`` and ``negative/``
Hugging Face folders and ``contrast.json``), the policy's tokenizer, and batches of
``(prompt messages, completion)``. Output per completion: the policy tokenizer's ids of the completion
alone (``add_special_tokens=False``, as TRL tokenizes a DPO completion), their character offsets, both
models' log-probabilities of each token after the prompt (rendered with the chat template and the
generation prompt) and earlier tokens, and the contrastive score of :mod:`counterpoint.critical.contrast`
in its full-distribution form.

The ids are scored by the contrast models, so their tokenizers must be the policy's: any other vocabulary
would score other tokens. :func:`check_tokenizers` refuses a mismatch (``UsageError`` naming the fix).
transformers and torch are imported lazily: :class:`ContrastScorer` is built cheaply and loads in
:meth:`ContrastScorer.load` (a DoFn's ``setup``).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Dict, List, Optional, Sequence, Tuple

from counterpoint import storage
from counterpoint.critical import contrast
from counterpoint.errors import UsageError

CONTRAST_JSON = "contrast.json"
SIDES = ("positive", "negative")


def read_manifest(directory: str) -> Dict[str, Any]:
    """``contrast.json`` of a contrast-models directory, with both model folders checked to exist."""
    path = storage.join(directory, CONTRAST_JSON)
    manifest = storage.read_json(path) if storage.exists(path) else None
    missing = [s for s in SIDES if not storage.exists(storage.join(directory, s, "config.json"))]
    if manifest is None or missing:
        raise UsageError(f"{directory} is not a contrast-models directory (needs {CONTRAST_JSON} and "
                         f"positive/ and negative/ model folders{'; missing ' + ', '.join(missing) if missing else ''}):"
                         f" make one with `counterpoint contrast-models OUT --base MODEL --output {directory}`")
    return manifest


def describe(directory: str, manifest: Dict[str, Any], beta: float) -> str:
    """The row's ``contrast_models`` JSON: paths, base, recipe and data hashes, the contrast strength."""
    return json.dumps({"directory": directory, "base": manifest.get("base"), "recipe": manifest.get("recipe"),
                       "data": manifest.get("data"), "beta": beta}, sort_keys=True)


def check_tokenizers(policy, others: Dict[str, Any], where: str) -> None:
    """Raises ``UsageError`` unless every tokenizer in ``others`` has the policy's vocabulary."""
    want = policy.get_vocab()
    for name, tok in others.items():
        if tok.get_vocab() != want:
            raise UsageError(
                f"the {name} contrast model in {where} has another tokenizer than the policy "
                f"({len(tok.get_vocab())} vs {len(want)} tokens): critical tokens are the policy's tokens; "
                "train the contrast models from the policy's base model (counterpoint contrast-models --base "
                "<the run's model>)")


def _local_dir(path: str) -> str:
    if storage.is_local(path):
        return path[len("file://"):] if path.startswith("file://") else path
    import tempfile  # transformers reads local folders only: gs:// and s3:// models are copied down

    return storage.download_tree(path, tempfile.mkdtemp(prefix="cp-contrast-"))


def _load_tokenizer(path: str, what: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(_local_dir(path))
    except Exception as e:
        raise UsageError(f"the {what} tokenizer at {path} does not load ({type(e).__name__}); "
                         + ("rebuild the directory with `counterpoint contrast-models`" if what in SIDES else
                            "give critical_tokens.tokenizer as a local model folder")) from None


def preflight(directory: str, policy_tokenizer: Optional[str]) -> Dict[str, Any]:
    """The driver's check before any work: the directory, both model configs and tokenizers load, and the
    tokenizers are the policy's. Returns the manifest; raises ``UsageError`` naming the fix."""
    from transformers import AutoConfig

    manifest = read_manifest(directory)
    toks = {}
    for side in SIDES:
        path = storage.join(directory, side)
        try:
            AutoConfig.from_pretrained(_local_dir(path))
        except Exception as e:
            raise UsageError(f"the {side} contrast model at {path} does not load ({type(e).__name__}); rebuild "
                             f"the directory with `counterpoint contrast-models OUT --base MODEL --output "
                             f"{directory}`") from None
        toks[side] = _load_tokenizer(path, side)
    policy = _load_tokenizer(policy_tokenizer, "policy") if policy_tokenizer else toks["positive"]
    check_tokenizers(policy, toks, directory)
    return manifest


def _load_folder(path: str, what: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = _local_dir(path)
    try:
        tok = AutoTokenizer.from_pretrained(local)
        model = AutoModelForCausalLM.from_pretrained(local)
    except Exception as e:  # transformers raises OSError / ValueError / safetensors errors alike
        raise UsageError(f"the {what} contrast model at {path} does not load ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:200] if str(e) else ''}); rebuild the directory with "
                         "`counterpoint contrast-models`") from None
    return tok, model.eval()


@dataclasses.dataclass
class Scored:
    """One completion, scored."""

    token_ids: List[int]
    offsets: List[Tuple[int, int]]
    logp_positive: List[float]
    logp_negative: List[float]
    scores: List[float]
    score_form: str = contrast.FULL_DISTRIBUTION
    tokens: List[str] = dataclasses.field(default_factory=list)  # each id decoded on its own
    truncated: bool = False  # prompt + completion over max_length: the tail was not scored


class ContrastScorer:
    """Both contrast models and the policy tokenizer (see the module docstring)."""

    def __init__(self, directory: str, policy_tokenizer: Optional[str] = None, *, beta: float = contrast.BETA,
                 batch_size: int = 4, max_length: int = 4096, score_form: str = contrast.FULL_DISTRIBUTION):
        if score_form not in (contrast.FULL_DISTRIBUTION, contrast.LOG_RATIO):
            raise ValueError(f"score_form must be {contrast.FULL_DISTRIBUTION} or {contrast.LOG_RATIO}, got {score_form!r}")
        self.score_form = score_form
        self.directory = directory
        self.policy_tokenizer = policy_tokenizer
        self.beta = beta
        self.batch_size = max(1, batch_size)
        self.max_length = max_length
        self.tokenizer = None
        self.models: Dict[str, Any] = {}
        self.manifest: Dict[str, Any] = {}

    def load(self) -> "ContrastScorer":
        if self.models:
            return self
        self.manifest = read_manifest(self.directory)
        toks = {}
        for side in SIDES:
            toks[side], self.models[side] = _load_folder(storage.join(self.directory, side), side)
        if self.policy_tokenizer:
            self.tokenizer = _load_tokenizer(self.policy_tokenizer, "policy")
        else:  # a scripted policy has no tokenizer of its own: it is taken to be the contrast models'
            self.tokenizer = toks["positive"]
        check_tokenizers(self.tokenizer, toks, self.directory)
        return self

    @property
    def contrast_models(self) -> str:
        return describe(self.directory, self.manifest, self.beta)

    def tokenize(self, completion: str) -> Tuple[List[int], List[Tuple[int, int]]]:
        enc = self.tokenizer(completion, add_special_tokens=False, return_offsets_mapping=True)
        return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]

    def prompt_ids(self, messages: Sequence[Dict[str, str]]) -> List[int]:
        if getattr(self.tokenizer, "chat_template", None):
            return list(self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True,
                                                           tokenize=True, return_dict=False))
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
        return list(self.tokenizer(text)["input_ids"])

    def score(self, items: Sequence[Tuple[Sequence[Dict[str, str]], str]]) -> List[Scored]:
        """Scores ``(prompt messages, completion)`` items, ``batch_size`` at a time."""
        self.load()
        out: List[Scored] = []
        for i in range(0, len(items), self.batch_size):
            out += self._score_batch(items[i:i + self.batch_size])
        return out

    def _score_batch(self, items) -> List[Scored]:
        import torch

        encoded = [(self.prompt_ids(msgs), *self.tokenize(text)) for msgs, text in items]
        seqs = [(p + ids)[: self.max_length] for p, ids, _ in encoded]
        width = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
        logits = {}
        with torch.no_grad():
            for side, model in self.models.items():
                logits[side] = model(input_ids=input_ids, attention_mask=mask).logits.float()
        out = []
        for b, (p, ids, offsets) in enumerate(encoded):
            n = max(0, min(len(ids), len(seqs[b]) - len(p)))  # tokens past max_length are not scored
            rows = slice(len(p) - 1, len(p) - 1 + n)  # logits at t-1 predict token t
            lp = logits["positive"][b, rows].numpy()
            lq = logits["negative"][b, rows].numpy()
            ids_n = ids[:n]
            logp_p, logp_q = contrast.sampled_logprobs(lp, ids_n), contrast.sampled_logprobs(lq, ids_n)
            scores = (contrast.scores_from_logits(lp, lq, ids_n, self.beta) if self.score_form == contrast.FULL_DISTRIBUTION
                      else contrast.scores_from_logprobs(logp_p, logp_q, self.beta))
            out.append(Scored(token_ids=ids_n, offsets=offsets[:n], logp_positive=logp_p, logp_negative=logp_q,
                              scores=scores, score_form=self.score_form,
                              tokens=[self.tokenizer.decode([t]) for t in ids_n], truncated=n < len(ids)))
        return out
