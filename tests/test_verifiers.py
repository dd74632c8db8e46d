import os
import pickle
import threading
import time

import pytest

from counterpoint.schemas.records import VERDICT_CORRECT, VERDICT_INCORRECT, VERDICT_UNKNOWN
from counterpoint.verifiers import (
    REASONS,
    ExactMatchVerifier,
    MathVerifier,
    NumericVerifier,
    Verdict,
    VerifierStartupError,
    extract_final_answer,
    make_verifier,
    verifier_for_answer_type,
)

FAULTS = "verifier_faults:inject"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --------------------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    "text, expected",
    [
        (r"so we get \boxed{\frac{1}{\sqrt{2}}} here", r"\frac{1}{\sqrt{2}}"),
        (r"first \boxed{3}, then finally \boxed{ \{1, 2\} }.", r"\{1, 2\}"),
        (r"ok \boxed{7} then cut off \boxed{\frac{1", "7"),  # incomplete last box ignored
        ("Natalia sold 48+24 = 72 clips.\n#### 72", "72"),
        ("#### 1,000", "1000"),
        ("So 6*3 = 18.\nThe answer is 18.", "18"),
        ("The answer is $18.", "18"),
        ("Answer: $1,234.50", "1234.50"),
        ("**Answer:** 42 apples", "42 apples"),
        ("Final Answer: The final answer is $\\frac{1}{2}$. I hope it is correct.", r"\frac{1}{2}"),
        ("The answer is:\n\n-3", "-3"),
        ("Answer: 5\nWait, recheck.\nThe answer is 6.", "6"),
        (r"The answer is \boxed{12}. Answer: 13", "12"),  # boxed wins
        ("I think it is 5, or maybe 7", None),
        ("", None),
    ],
)
def test_extract_final_answer(text, expected):
    assert extract_final_answer(text) == expected


def test_extract_fallback_last_number_is_opt_in():
    text = "We compute 3 + 4 = 7, so 1,500 total"
    assert extract_final_answer(text) is None
    assert extract_final_answer(text, fallback_last_number=True) == "1500"
    assert extract_final_answer("no digits here", fallback_last_number=True) is None


# --------------------------------------------------------------------------- numeric


@pytest.mark.parametrize(
    "completion, gold, verdict, reason",
    [
        ("The answer is 18.", "18", VERDICT_CORRECT, None),
        ("The answer is 18.0", "18", VERDICT_CORRECT, None),
        ("The answer is $18.", "18", VERDICT_CORRECT, None),
        ("#### 18.00", "$18", VERDICT_CORRECT, None),
        (r"\boxed{\$18}", "18", VERDICT_CORRECT, None),
        (r"\boxed{3/4}", "0.75", VERDICT_CORRECT, None),
        (r"\boxed{\frac{3}{4}}", "0.75", VERDICT_CORRECT, None),
        ("#### 0.75", "3/4", VERDICT_CORRECT, None),
        ("#### 1,234", "1234", VERDICT_CORRECT, None),
        ("#### -3", "-3", VERDICT_CORRECT, None),
        ("#### 50%", "50", VERDICT_CORRECT, None),
        ("#### 50%", "0.5", VERDICT_CORRECT, None),
        ("#### 42 apples", "42", VERDICT_CORRECT, None),
        ("#### 0.3333333", "1/3", VERDICT_CORRECT, None),  # within 1e-6 relative
        ("#### 0.333", "1/3", VERDICT_INCORRECT, "answer_mismatch"),
        ("#### 3", "-3", VERDICT_INCORRECT, "answer_mismatch"),
        ("The answer is 17.", "18", VERDICT_INCORRECT, "answer_mismatch"),
        ("I computed 18 somewhere but never said it", "18", VERDICT_INCORRECT, "no_final_answer"),
        ("The answer is Tuesday.", "18", VERDICT_INCORRECT, "non_numeric_answer"),
        ("The answer is 3 or 4.", "3", VERDICT_INCORRECT, "non_numeric_answer"),
        ("The answer is 18.", "eighteen", VERDICT_CORRECT, None),  # number words read
        ("The answer is 18.", "a few", VERDICT_UNKNOWN, "unparsable_gold"),
        ("The answer is 18.", "Natalia sold 72 clips.\n#### 18", VERDICT_CORRECT, None),  # raw GSM8K gold
    ],
)
def test_numeric_verifier(completion, gold, verdict, reason):
    v = NumericVerifier()
    got = v.verify(completion, gold)
    assert (got.verdict, got.reason) == (verdict, reason), got
    assert got.reason is None or got.reason in REASONS


def test_numeric_truncated_is_never_correct():
    v = NumericVerifier()
    got = v.verify("... so the answer is 18.", "18", truncated=True)
    assert got == Verdict(VERDICT_INCORRECT, "truncated", "18")
    assert v.verify("half a sente", "18", truncated=True).reason == "truncated"
    items = [("#### 18", "18", False), ("#### 18", "18", True), ("nothing", "18", False)]
    assert [(x.verdict, x.reason) for x in v.verify_batch(items)] == [
        (VERDICT_CORRECT, None),
        (VERDICT_INCORRECT, "truncated"),
        (VERDICT_INCORRECT, "no_final_answer"),
    ]


def test_exact_match_verifier():
    v = ExactMatchVerifier()
    assert v.verify("The answer is  New   York.", "new york").verdict == VERDICT_CORRECT
    assert v.verify(r"\boxed{\text{(B)}}", "(b)").verdict == VERDICT_CORRECT
    assert v.verify("The answer is Boston.", "new york").reason == "answer_mismatch"
    assert v.verify("no idea", "new york").reason == "no_final_answer"
    assert v.verify("The answer is x.", "  ").verdict == VERDICT_UNKNOWN
    assert v.verify("The answer is new york.", "new york", truncated=True).reason == "truncated"


def test_verdict_invariants_and_factories():
    with pytest.raises(ValueError):
        Verdict("maybe", "x", None)
    with pytest.raises(ValueError):
        Verdict(VERDICT_CORRECT, "answer_mismatch", "1")
    with pytest.raises(ValueError):
        Verdict(VERDICT_INCORRECT, None, "1")
    assert isinstance(verifier_for_answer_type("numeric"), NumericVerifier)
    assert isinstance(verifier_for_answer_type("exact"), ExactMatchVerifier)
    m = verifier_for_answer_type("math", timeout_s=2.0)
    assert isinstance(m, MathVerifier) and m.timeout_s == 2.0 and m.worker_pids == []  # lazy
    assert m.version.startswith("math-verify==0.")
    with pytest.raises(ValueError):
        make_verifier("auto")
    with pytest.raises(ValueError):
        MathVerifier(mp_context="fork")


# --------------------------------------------------------------------------- math-verify


@pytest.fixture(scope="module")
def math_verifier():
    v = MathVerifier(timeout_s=10.0, pool_size=2)
    yield v
    pids = v.worker_pids
    v.close()
    time.sleep(0.2)
    assert not any(_alive(p) for p in pids)


@pytest.fixture(scope="module")
def faulty_verifier():
    v = MathVerifier(timeout_s=1.5, pool_size=2, fault_injector=FAULTS)
    yield v
    v.close()


def test_math_equivalences(math_verifier):
    items = [
        (r"Thus $x = \boxed{\frac{1}{2}}$.", "0.5", False),
        (r"The answer is 0.5", r"\frac{1}{2}", False),
        (r"so \boxed{2\sqrt{2}}", r"\sqrt{8}", False),
        (r"\boxed{\{1, 2\}}", r"\{2,1\}", False),
        (r"\boxed{x^2+2x+1}", r"(x+1)^2", False),
        (r"so \boxed{3}", r"4", False),
        (r"so \boxed{\sqrt{3}}", r"\sqrt{8}", False),
        (r"so \boxed{3}", r"\frac{", False),  # unparsable gold
        (r"never states it", r"4", False),
        (r"so \boxed{4}", r"4", True),  # truncated
    ]
    got = [(v.verdict, v.reason) for v in math_verifier.verify_batch(items)]
    assert got == [
        (VERDICT_CORRECT, None),
        (VERDICT_CORRECT, None),
        (VERDICT_CORRECT, None),
        (VERDICT_CORRECT, None),
        (VERDICT_CORRECT, None),
        (VERDICT_INCORRECT, "answer_mismatch"),
        (VERDICT_INCORRECT, "answer_mismatch"),
        (VERDICT_UNKNOWN, "unparsable_gold"),
        (VERDICT_INCORRECT, "no_final_answer"),
        (VERDICT_INCORRECT, "truncated"),
    ]
    one = math_verifier.verify(r"so \boxed{2\sqrt{2}}", r"\sqrt{8}")
    assert one == Verdict(VERDICT_CORRECT, None, r"2\sqrt{2}")


def test_math_from_threads(math_verifier):
    """Called from non-main threads (as Beam does), concurrently on one pool."""
    out = {}

    def work(k):
        out[k] = math_verifier.verify_batch([(r"\boxed{\frac{2}{4}}", "0.5", False), (r"\boxed{7}", "8", False)] * 3)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(out) == [0, 1]
    for verdicts in out.values():
        assert [v.verdict for v in verdicts] == [VERDICT_CORRECT, VERDICT_INCORRECT] * 3


def test_math_pickle_before_and_after_use_and_start_in_thread(math_verifier):
    fresh = MathVerifier(timeout_s=7.0, pool_size=1)
    clone = pickle.loads(pickle.dumps(fresh))
    assert clone.timeout_s == 7.0 and clone.pool_size == 1 and clone.worker_pids == []
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("v", clone.verify_batch([(r"\boxed{2^{10}}", "1024", False)])))
    t.start()
    t.join(60)
    assert [v.verdict for v in result["v"]] == [VERDICT_CORRECT]
    assert len(clone.worker_pids) == 1
    # pickling a live verifier carries configuration only, never process handles
    live_clone = pickle.loads(pickle.dumps(clone))
    assert live_clone.worker_pids == [] and live_clone.timeout_s == 7.0
    pid = clone.worker_pids[0]
    clone.close()
    time.sleep(0.2)
    assert not _alive(pid)
    # a closed verifier restarts lazily
    assert math_verifier.verify(r"\boxed{1}", "1").verdict == VERDICT_CORRECT


def test_math_hang_times_out_and_pool_recovers(faulty_verifier):
    v = faulty_verifier
    assert v.verify(r"\boxed{1}", "1").verdict == VERDICT_CORRECT  # warm the pool
    v.verify_batch([(r"\boxed{1}", "1", False)] * 2)
    pids_before = set(v.worker_pids)
    items = [
        (r"<<HANG>> \boxed{1}", "1", False),
        (r"\boxed{2}", "2", False),
        (r"\boxed{3}", "4", False),
        (r"\boxed{5}", "5", False),
    ]
    t0 = time.monotonic()
    got = v.verify_batch(items)
    elapsed = time.monotonic() - t0
    print(f"\nhang batch returned in {elapsed:.2f}s (timeout_s={v.timeout_s})")
    assert (got[0].verdict, got[0].reason, got[0].final_answer) == (VERDICT_UNKNOWN, "verifier_timeout", "1")
    assert [(x.verdict, x.reason) for x in got[1:]] == [
        (VERDICT_CORRECT, None),
        (VERDICT_INCORRECT, "answer_mismatch"),
        (VERDICT_CORRECT, None),
    ]
    assert elapsed < v.timeout_s + 5.0
    assert v.stats["timeouts"] >= 1
    killed = pids_before - set(v.worker_pids)
    assert len(killed) == 1
    time.sleep(0.2)
    assert not _alive(killed.pop())
    # the pool keeps working (the replacement worker included)
    after = v.verify_batch([(r"\boxed{\frac{1}{2}}", "0.5", False)] * 4)
    assert [x.verdict for x in after] == [VERDICT_CORRECT] * 4


def test_math_worker_crash_is_unknown(faulty_verifier):
    v = faulty_verifier
    got = v.verify_batch([(r"<<CRASH>> \boxed{1}", "1", False), (r"\boxed{9}", "9", False)])
    assert [(x.verdict, x.reason) for x in got] == [(VERDICT_UNKNOWN, "verifier_crash"), (VERDICT_CORRECT, None)]
    assert v.stats["crashes"] >= 1
    raised = v.verify(r"<<RAISE>> \boxed{1}", "1")
    assert (raised.verdict, raised.reason) == (VERDICT_UNKNOWN, "verifier_error")
    assert v.verify(r"\boxed{6}", "6").verdict == VERDICT_CORRECT


def test_math_bad_fault_injector_fails_loudly():
    v = MathVerifier(pool_size=1, fault_injector="verifier_faults:no_such_function", start_timeout_s=60)
    with pytest.raises(VerifierStartupError, match="no_such_function"):
        v.verify(r"\boxed{1}", "1")
    v.close()


def test_throughput_200_items(math_verifier):
    golds = ["18", r"\frac{1}{2}", r"\sqrt{8}", "3/4", r"x^2+1", "1000", r"\pi", "-7"]
    answers = ["18", "0.5", r"2\sqrt{2}", "0.75", r"1+x^2", "1,000", r"\pi", "7"]
    items = []
    for i in range(200):
        k = i % len(golds)
        items.append((f"Work for item {i}. The answer is \\boxed{{{answers[k]}}}.", golds[k], False))
    math_verifier.verify(r"\boxed{1}", "1")  # pool warm
    t0 = time.perf_counter()
    got = math_verifier.verify_batch(items)
    dt = time.perf_counter() - t0
    expected = [VERDICT_CORRECT] * 7 + [VERDICT_INCORRECT]
    assert [v.verdict for v in got] == [expected[i % 8] for i in range(200)]

    nv = NumericVerifier()
    num_items = [(f"step {i}\n#### {i:,}", str(i), False) for i in range(200)]
    t1 = time.perf_counter()
    ngot = nv.verify_batch(num_items)
    dn = time.perf_counter() - t1
    assert all(v.verdict == VERDICT_CORRECT for v in ngot)
    print(
        f"\nMathVerifier(pool_size={math_verifier.pool_size}): 200 items in {dt:.2f}s = {200 / dt:.0f} items/s; "
        f"NumericVerifier: {200 / dn:.0f} items/s"
    )
