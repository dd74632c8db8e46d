"""Built-in procedural multi-step arithmetic word problems with exact integer answers.

Each problem is a start value followed by ``n`` primitive operations on a running
total (``add`` / ``sub`` / ``mul`` / ``div``, division always exact, every
intermediate value a positive integer), told as a short story in one of two styles:

* ``story``: one person's items change over time ("buys 5 more", "gives away 3",
  "twice as many as before", "splits them into 4 bags and keeps one");
* ``chain``: people compared to the previous one ("3 fewer than", "twice as many as",
  "half as many as"); the question asks about the last person.

``difficulty`` is the number of operations. Problem ``i`` depends only on
``(seed, i, min_ops, max_ops)`` (its RNG is seeded from a hash of them), so any
index range can be generated independently and in parallel.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any, Dict, Iterator, List, Tuple

from counterpoint.schemas import records

GENERATOR_VERSION = 1
SOURCE = "procedural"
DEFAULT_MIN_OPS = 2
DEFAULT_MAX_OPS = 4
MAX_VALUE = 999

OPS = ("add", "sub", "mul", "div")
_OP_WEIGHTS = {"add": 3, "sub": 3, "mul": 2, "div": 2}
_OP_SYMBOL = {"add": "+", "sub": "-", "mul": "*", "div": "/"}

NAMES = (
    "Ava", "Ben", "Chloe", "Daniel", "Emma", "Farid", "Grace", "Hiro", "Isla", "Jamal",
    "Kira", "Liam", "Maya", "Noah", "Olivia", "Pablo", "Quinn", "Rosa", "Sam", "Tara",
    "Umar", "Vera", "Wes", "Ximena", "Yusuf", "Zoe", "Aiden", "Bella", "Carlos", "Dina",
    "Eli", "Fatima", "Gabe", "Hana", "Ivan", "Jade", "Kofi", "Lena", "Mateo", "Nadia",
)
ITEMS = (
    ("apple", "apples"), ("marble", "marbles"), ("sticker", "stickers"), ("pencil", "pencils"),
    ("cookie", "cookies"), ("book", "books"), ("stamp", "stamps"), ("seashell", "seashells"),
    ("coin", "coins"), ("trading card", "trading cards"), ("toy car", "toy cars"),
    ("crayon", "crayons"), ("egg", "eggs"), ("bead", "beads"), ("balloon", "balloons"),
    ("cupcake", "cupcakes"), ("flower", "flowers"), ("button", "buttons"),
)
CONTAINERS = (
    ("box", "boxes"), ("bag", "bags"), ("jar", "jars"), ("pack", "packs"),
    ("basket", "baskets"), ("crate", "crates"),
)
_TIMES_WORD = {2: "twice", 3: "three times", 4: "four times"}
_FRACTION_WORD = {2: "half", 3: "a third", 4: "a quarter", 5: "a fifth", 6: "a sixth"}

# --- story style templates -------------------------------------------------
_STORY_START = (
    "{name} has {n} {items}.",
    "{name} starts the day with {n} {items}.",
    "{name} owns {n} {items}.",
)
_STORY_START_EACH = (
    "{name} has {a} {containers} with {b} {items} in each {container}.",
    "{name} buys {a} {containers} of {items}, and each {container} holds {b} {items}.",
)
_STORY = {
    "add": (
        "{name} buys {k} more {items}.",
        "{friend} gives {name} {k} {items}.",
        "{name} finds {k} more {items}.",
        "Then {name} gets {k} more {items} as a gift.",
    ),
    "sub": (
        "{name} gives away {k} {items} to {friend}.",
        "{name} gives {k} {items} to {friend}.",
        "{name} loses {k} {items}.",
        "{name} sells {k} of the {items}.",
        "{name} uses {k} {items} for a school project.",
    ),
    "mul2": (
        "{name} doubles the number of {items}.",
        "{friend} gives {name} as many {items} as {name} already has.",
        "By the end of the week, {name} has twice as many {items} as before.",
    ),
    "mul": (
        "By the end of the week, {name} has {times} as many {items} as before.",
        "After a trade, {name} ends up with {times} as many {items} as before.",
    ),
    "div2": (
        "{name} gives away half of the {items}.",
        "{name} keeps only half of the {items} and gives the rest to {friend}.",
    ),
    "div": (
        "{name} splits the {items} equally into {k} {containers} and keeps just one {container}.",
        "{name} divides the {items} equally into {k} groups and keeps one group.",
    ),
}
_STORY_QUESTION = (
    "How many {items} does {name} have now?",
    "How many {items} does {name} have at the end?",
)

# --- chain style templates -------------------------------------------------
_CHAIN_START = ("{p} has {n} {items}.",)
_CHAIN = {
    "add": ("{p} has {k} more {items} than {q}.",),
    "sub": ("{p} has {k} fewer {items} than {q}.",),
    "mul": ("{p} has {times} as many {items} as {q}.",),
    "div": ("{p} has {fraction} as many {items} as {q}.",),
}
_CHAIN_QUESTION = ("How many {items} does {p} have?",)


def apply_op(value: int, op: str, operand: int) -> int:
    """One primitive operation on the running total (division must be exact)."""
    if op == "add":
        return value + operand
    if op == "sub":
        return value - operand
    if op == "mul":
        return value * operand
    if op == "div":
        if operand == 0 or value % operand:
            raise ValueError(f"{value} / {operand} is not exact")
        return value // operand
    raise ValueError(f"unknown op {op!r}")


def _rng(seed: int, index: int, min_ops: int, max_ops: int) -> random.Random:
    digest = hashlib.sha256(f"counterpoint/procedural/v{GENERATOR_VERSION}:{seed}:{index}:{min_ops}:{max_ops}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _feasible_operands(value: int, op: str) -> List[int]:
    if op == "add":
        return [k for k in range(2, 21) if value + k <= MAX_VALUE]
    if op == "sub":
        return list(range(1, min(value - 1, 25) + 1))
    if op == "mul":
        return [k for k in (2, 2, 3, 4) if value * k <= MAX_VALUE // 2]
    if op == "div":
        return [k for k in range(2, 7) if value % k == 0 and value // k >= 1]
    raise ValueError(op)


def _pick_op(rng: random.Random, value: int, allow_div: bool = True) -> Tuple[str, int]:
    choices = []
    for op in OPS:
        if op == "div" and not allow_div:
            continue
        operands = _feasible_operands(value, op)
        if operands:
            choices.append((op, operands))
    weights = [_OP_WEIGHTS[op] for op, _ in choices]
    op, operands = rng.choices(choices, weights=weights, k=1)[0]
    return op, rng.choice(operands)


def _check_range(min_ops: int, max_ops: int) -> None:
    if not (isinstance(min_ops, int) and isinstance(max_ops, int)) or min_ops < 1 or max_ops < min_ops:
        raise ValueError(f"need 1 <= min_ops <= max_ops, got min_ops={min_ops} max_ops={max_ops}")


def problem_id(seed: int, index: int, min_ops: int = DEFAULT_MIN_OPS, max_ops: int = DEFAULT_MAX_OPS) -> str:
    base = f"proc-{seed}-{index}"
    if (min_ops, max_ops) != (DEFAULT_MIN_OPS, DEFAULT_MAX_OPS):
        base += f"-ops{min_ops}to{max_ops}"
    return base


def procedural_problem(seed: int, index: int, min_ops: int = DEFAULT_MIN_OPS,
                       max_ops: int = DEFAULT_MAX_OPS) -> Dict[str, Any]:
    """Problem ``index`` of the procedural stream ``seed`` (a PROBLEMS row).

    Long: the problem templates are data written as code: one branch per template.
    """
    _check_range(min_ops, max_ops)
    rng = _rng(seed, index, min_ops, max_ops)
    n_ops = rng.randint(min_ops, max_ops)
    item, items = rng.choice(ITEMS)
    container, containers = rng.choice(CONTAINERS)
    style = "chain" if (rng.random() < 0.5 and n_ops + 1 <= len(NAMES)) else "story"

    ops: List[Dict[str, int]] = []
    sentences: List[str] = []
    steps: List[str] = []

    if style == "story":
        name, friend = rng.sample(NAMES, 2)
        fmt = dict(name=name, friend=friend, items=items, item=item, container=container, containers=containers)
        if rng.random() < 0.35:
            a, b = rng.randint(2, 8), rng.randint(2, 12)
            start = a
            value = a * b
            ops.append({"op": "mul", "operand": b})
            sentences.append(rng.choice(_STORY_START_EACH).format(a=a, b=b, **fmt))
            steps.append(f"{a} * {b} = {value}")
        else:
            start = value = rng.randint(3, 30)
            sentences.append(rng.choice(_STORY_START).format(n=start, **fmt))
        while len(ops) < n_ops:
            op, k = _pick_op(rng, value)
            new = apply_op(value, op, k)
            if op in ("mul", "div") and k == 2 and rng.random() < 0.7:
                template = rng.choice(_STORY[op + "2"])
            else:
                template = rng.choice(_STORY[op])
            sentences.append(template.format(k=k, times=_TIMES_WORD.get(k, f"{k} times"), **fmt))
            steps.append(f"{value} {_OP_SYMBOL[op]} {k} = {new}")
            ops.append({"op": op, "operand": k})
            value = new
        sentences.append(rng.choice(_STORY_QUESTION).format(**fmt))
        entities = {"name": name, "friend": friend, "item": items}
    else:
        people = rng.sample(NAMES, n_ops + 1)
        start = value = rng.randint(3, 30)
        sentences.append(rng.choice(_CHAIN_START).format(p=people[0], n=start, items=items))
        for i in range(n_ops):
            op, k = _pick_op(rng, value)
            new = apply_op(value, op, k)
            sentences.append(rng.choice(_CHAIN[op]).format(
                p=people[i + 1], q=people[i], k=k, items=items,
                times=_TIMES_WORD.get(k, f"{k} times"), fraction=_FRACTION_WORD.get(k, f"1/{k}")))
            steps.append(f"{people[i + 1]}: {value} {_OP_SYMBOL[op]} {k} = {new}")
            ops.append({"op": op, "operand": k})
            value = new
        sentences.append(rng.choice(_CHAIN_QUESTION).format(p=people[-1], items=items))
        entities = {"people": people, "item": items}

    metadata = {
        "generator": SOURCE,
        "version": GENERATOR_VERSION,
        "seed": seed,
        "index": index,
        "min_ops": min_ops,
        "max_ops": max_ops,
        "style": style,
        "start": start,
        "ops": ops,
        "steps": steps,
        "answer": value,
        "entities": entities,
    }
    return {
        "problem_id": problem_id(seed, index, min_ops, max_ops),
        "source": SOURCE,
        "question": " ".join(sentences),
        "gold_answer": str(value),
        "answer_type": "numeric",
        "difficulty": len(ops),
        "metadata": records.dumps(metadata),
    }


def iter_procedural(seed: int, start: int, stop: int, min_ops: int = DEFAULT_MIN_OPS,
                    max_ops: int = DEFAULT_MAX_OPS) -> Iterator[Dict[str, Any]]:
    """Problems ``start <= index < stop`` (each independent of the others)."""
    _check_range(min_ops, max_ops)
    for i in range(start, stop):
        yield procedural_problem(seed, i, min_ops, max_ops)
