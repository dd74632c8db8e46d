import itertools
import os
import pickle
import threading
import time
from fractions import Fraction

import pytest

from counterpoint.schemas.records import VERDICT_CORRECT, VERDICT_INCORRECT, VERDICT_UNKNOWN
from counterpoint.verifiers import (
    FORMAT_FAILURE_REASONS,
    REASONS,
    UNKNOWN_REASONS,
    ExactMatchVerifier,
    MathVerifier,
    NumericVerifier,
    Quantity,
    Verdict,
    VerifierStartupError,
    extract_final_answer,
    is_format_failure,
    make_verifier,
    parse_quantity,
    quantities_match,
    reason_class,
    strip_units,
    verifier_for_answer_type,
)
from counterpoint.verifiers import quality
from counterpoint.verifiers.suite import VerifierSuite

FAULTS = "counterpoint.testing.verifier_faults:inject"


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
    assert m.version.startswith("math-verify==0.") and m.version.endswith("rules-2")
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
    v = MathVerifier(pool_size=1, fault_injector="counterpoint.testing.verifier_faults:no_such_function", start_timeout_s=60)
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


# --------------------------------------------------------------------------- numbers with units (extract.py)


@pytest.mark.parametrize(
    "text, value, percent",
    [
        ("18 dollars", Fraction(18), False),
        ("12 cm^2", Fraction(12), False),
        (r"12\text{ cm}^2", Fraction(12), False),
        (r"12 \mathrm{cm}^2", Fraction(12), False),
        ("12 m²", Fraction(12), False),
        ("60 km/h", Fraction(60), False),
        ("60km/h", Fraction(60), False),  # a known abbreviation may be attached
        (r"30^\circ", Fraction(30), False),
        (r"30^{\circ}", Fraction(30), False),
        ("25 °C", Fraction(25), False),
        ("9.8 m/s^2", Fraction(49, 5), False),
        ("100 square feet", Fraction(100), False),
        (r"\$1,234.50", Fraction(2469, 2), False),
        (r"\frac{3}{4} cup", Fraction(3, 4), False),
        (r"1.5 \times 10^{8} m/s", Fraction(150_000_000), False),
        ("1e300", Fraction(10) ** 300, False),
        ("x = 5", Fraction(5), False),
        ("−3", Fraction(-3), False),
        ("1{,}000", Fraction(1000), False),
        ("seven", Fraction(7), False),
        ("twenty-one apples", Fraction(21), False),
        ("seven dozen", Fraction(84), False),
        ("2.5 million", Fraction(2_500_000), False),
        ("3 times", Fraction(3), False),
        ("2 1/2 cups", Fraction(5, 2), False),  # a mixed number
        (r"2\frac{1}{2}", Fraction(5, 2), False),
        (r"50\%", Fraction(50), True),
        ("25 percent", Fraction(25), True),
    ],
)
def test_parse_quantity_reads_numbers_with_units(text, value, percent):
    q = parse_quantity(text)
    assert q is not None, text
    assert (q.value, q.percent) == (value, percent)


@pytest.mark.parametrize(
    "text",
    ["5 x", "2 ab", "2abc", "2m^2", "18dollars", "5 thousand thousand", "18 more than x", "3 times the radius",
     "18 minus 3", "3 or 4", "2x+1", r"\sqrt{2}", "5% million", "Tuesday", "", "12 less", r"\frac{1}{2}3", "2 3/2"],
)
def test_parse_quantity_refuses_what_is_not_one_number(text):
    assert parse_quantity(text) is None


@pytest.mark.parametrize(
    "text, unit",
    [("18 dollars", "usd"), ("12 cm^2", "cm^2"), (r"12\text{ cm}^2", "cm^2"), ("12 m²", "m^2"), ("100 square feet", "ft^2"),
     ("100 sq ft", "ft^2"), ("60 km/h", "km/h"), ("60 kph", "km/h"), ("12 miles per hour", "mi/h"), ("12 mph", "mi/h"),
     (r"30^\circ", "deg"), ("30 degrees", "deg"), ("25 °C", "degC"), ("90 seconds", "s"), ("90 secs", "s"),
     (r"90 \text{ minutes}", "min"), ("3 hrs", "h"), ("7 inches", "in"), ("7 cups", "cup"), ("12", ""), ("50%", "")],
)
def test_units_are_read_in_one_spelling(text, unit):
    assert _q(text).unit == unit


def test_equal_numbers_with_different_units_are_not_confirmed():
    from counterpoint.verifiers.extract import units_conflict

    assert units_conflict(_q("90 seconds"), _q(r"90 \text{ minutes}"))
    assert not units_conflict(_q("90 mins"), _q(r"90 \text{ minutes}"))
    assert not units_conflict(_q("90 seconds"), _q("90"))  # a bare gold names no unit
    assert not units_conflict(_q("18 dollars"), _q(r"\$18"))
    got = NumericVerifier().verify("The answer is 90 seconds.", r"90 \text{ minutes}")
    assert got == Verdict(VERDICT_UNKNOWN, "unconfirmed_equivalence", "90 seconds")


def test_strip_units_gives_the_number_as_text():
    assert strip_units("12 cm^2") == "12"
    assert strip_units(r"\frac{3}{4} cup") == "3/4"
    assert strip_units("1e300") == r"1 \times 10^{300}"
    assert strip_units("5 thousand dollars") == "5000"
    assert strip_units(r"50\%") == r"50\%"  # a percent keeps its meaning
    assert strip_units("2m^2") == "2m^2"
    assert strip_units("x^2+1") == "x^2+1"
    assert strip_units("2 1/2 cups") == "5/2"


def _q(text):
    q = parse_quantity(text)
    assert q is not None, text
    return q


@pytest.mark.parametrize(
    "answer, gold, equal",
    [
        ("0.5", "1/2", True),  # an exact decimal
        ("0.333333", "1/3", True),  # 6 digits, correctly rounded
        ("0.3333333", "1/3", True),
        ("0.666667", "2/3", True),
        ("0.666666", "2/3", False),  # truncated
        ("0.3333", "1/3", False),  # too few digits to be an approximation
        ("0.13", "1/8", False),
        ("2.50", "2.5", True),
        ("12345.6", "12345.63", False),
        ("0.0000001", "0.0000002", False),
        ("0.99999999", "1", False),
        ("1.000001e300", "1e300", False),
        ("1000000", "1000001", False),  # integers: no relative tolerance
        ("123456789012345678901", "123456789012345678900", False),
        ("50%", "50", True),
        ("50%", "0.5", True),
        ("50%", "0.5%", False),
        ("33.3333%", "1/3", True),
        ("33.3%", "1/3", False),
    ],
)
def test_quantities_match_is_exact_unless_a_decimal_approximates(answer, gold, equal):
    assert quantities_match(_q(answer), _q(gold)) is equal
    assert quantities_match(_q(gold), _q(answer)) is equal  # symmetric


def test_decimal_quantity_records_its_written_precision():
    assert _q("0.3330") == Quantity(Fraction(333, 1000), False, 4, Fraction(1, 10_000))
    assert _q("18") == Quantity(Fraction(18))
    assert not _q("0.33333").is_approximation and _q("0.333333").is_approximation


# --------------------------------------------------------------------------- exact check (exact.py, in-process)


def test_exact_compare_never_calls_close_equal():
    import sympy
    from sympy import Float, Rational, factorial

    from counterpoint.verifiers import exact

    inv = lambda n: 1 / factorial(n, evaluate=False)  # noqa: E731 - unevaluated, as latex2sympy builds it
    with exact.judging(approx_allowed=False):
        assert exact.compare(inv(2006), inv(2004)) is False  # evalf(chop=True) says 0
        assert exact.compare(inv(2004), (2005 * 2006) * inv(2006)) is True
        assert exact.compare(sympy.Pow(2, 1000, evaluate=False), sympy.Pow(2, 1000, evaluate=False) + 1) is False
        assert exact.compare(sympy.sqrt(2) + sympy.sqrt(3), sympy.sqrt(5 + 2 * sympy.sqrt(6))) is True
        assert exact.compare(Rational(355, 113), sympy.pi) is False
        assert exact.compare(Float("0.333333"), Rational(1, 3)) is False  # no decimal in the text: exact
        x = sympy.Symbol("x")
        assert exact.compare((x + 1) ** 2, x**2 + 2 * x + 1) is True
    with exact.judging(approx_allowed=True):
        assert exact.compare(Float("0.333333"), Rational(1, 3)) is True
        assert exact.compare(Float("0.3333"), Rational(1, 3)) is False
        assert exact.compare(Float("1.414214"), sympy.sqrt(2)) is True
    huge = sympy.Pow(2, sympy.Pow(10, 10, evaluate=False), evaluate=False)
    assert exact.too_big(huge) and exact.too_big(factorial(sympy.Pow(10, 9, evaluate=False) + 1, evaluate=False))
    assert not exact.too_big(inv(2006)) and not exact.too_big(sympy.Pow(2, 1000, evaluate=False))


# --------------------------------------------------------------------------- reason classes (issue 9 item 6)


def test_reason_classes():
    assert FORMAT_FAILURE_REASONS == {"no_final_answer", "non_numeric_answer"}
    assert reason_class("no_final_answer") == "format" and reason_class("non_numeric_answer") == "format"
    assert reason_class("answer_mismatch") == "answer"
    assert reason_class("truncated") == "truncated"
    assert {reason_class(r) for r in UNKNOWN_REASONS} == {"undecided"}
    assert {"unconfirmed_equivalence", "too_large_to_compare"} <= set(UNKNOWN_REASONS)
    assert reason_class(None) is None
    assert sorted(reason_class(r) for r in REASONS).count("format") == 2


def test_a_format_failure_is_incorrect_with_a_format_reason_for_every_verifier(math_verifier):
    no_marker = ("So the total is 7.", "7", False)
    words = ("The answer is Tuesday.", "7", False)
    for verifier in (NumericVerifier(), ExactMatchVerifier(), math_verifier):
        got = verifier.verify_batch([no_marker])[0]
        assert got == Verdict(VERDICT_INCORRECT, "no_final_answer", None), verifier
        assert is_format_failure(got.reason)
    for verifier in (NumericVerifier(), math_verifier):
        got = verifier.verify_batch([words])[0]
        assert got == Verdict(VERDICT_INCORRECT, "non_numeric_answer", "Tuesday"), verifier
        assert is_format_failure(got.reason)
    # a stated wrong number is an answer failure, not a format one
    wrong = NumericVerifier().verify("The answer is 8 apples.", "7")
    assert (wrong.verdict, reason_class(wrong.reason)) == (VERDICT_INCORRECT, "answer")


def test_suite_judge_returns_verdicts_in_order():
    suite = VerifierSuite("auto")
    items = [("#### 18", "18", False, "numeric"), ("The answer is Boston.", "boston", False, "exact"),
             ("nothing", "3", False, "numeric"), ("The answer is 4 cm.", "5", False, "numeric")]
    assert suite.judge(items) == [
        Verdict(VERDICT_CORRECT, None, "18"),
        Verdict(VERDICT_CORRECT, None, "Boston"),
        Verdict(VERDICT_INCORRECT, "no_final_answer", None),
        Verdict(VERDICT_INCORRECT, "answer_mismatch", "4 cm"),
    ]
    assert suite.verdicts(items) == [VERDICT_CORRECT, VERDICT_CORRECT, VERDICT_INCORRECT, VERDICT_INCORRECT]
    suite.close()


# --------------------------------------------------------------------------- the case file (issue 9 item 8)

from _paths import DATA  # noqa: E402

CASES = quality.load_cases(str(DATA / "verifier_cases.jsonl"))


@pytest.fixture(scope="module")
def case_verdicts(math_verifier):
    return {
        "math": quality.judge_cases(math_verifier, CASES),
        "numeric": quality.judge_cases(NumericVerifier(), CASES),
        "exact": quality.judge_cases(ExactMatchVerifier(), CASES),
    }


def test_case_file_is_large_and_adversarial():
    assert len(CASES) >= 150
    by_category = {}
    for c in CASES:
        by_category[c.category] = by_category.get(c.category, 0) + 1
        assert c.expected in (VERDICT_CORRECT, VERDICT_INCORRECT, VERDICT_UNKNOWN)
        assert c.reason is None or c.reason in REASONS
        assert c.answer_type in ("math", "numeric", "exact")
        assert c.equivalent in (True, False, None)
        assert c.expected != VERDICT_CORRECT or c.equivalent is True, c.id  # the file itself is precise
    for category in ("huge_numbers", "units", "intervals", "plus_minus", "sets_tuples", "fractions_decimals",
                     "percentages", "negatives", "thousands", "latex_wrappers", "equations", "multiple_answers",
                     "trailing_prose", "format", "adversarial"):
        assert by_category.get(category, 0) >= 5, category
    assert sum(c.equivalent is False for c in CASES) >= 60  # many traps, not only easy positives


@pytest.mark.parametrize("name", ["math", "numeric", "exact"])
def test_each_case_gets_its_expected_verdict(case_verdicts, name):
    own = [(c, v) for c, v in zip(CASES, case_verdicts[name]) if c.answer_type == name]
    assert own
    assert quality.expectation_failures([c for c, _ in own], [v for _, v in own]) == []


def test_precision_is_one_for_every_verifier_and_math_recall_at_least_097(case_verdicts):
    scores = {name: quality.score(CASES, verdicts) for name, verdicts in case_verdicts.items()}
    for name, s in scores.items():
        assert s["false_positives"] == [], name
        assert s["precision"] == 1.0, name
    assert scores["math"]["recall"] >= 0.97, scores["math"]["missed_equivalences"]
    assert scores["math"]["correct_verdicts"] >= 140


# --------------------------------------------------------------------------- property tests (issue 9 (f))


def _judge(verifier, pairs):
    """pairs: (answer, gold) -> [(verdict, reason)]"""
    got = verifier.verify_batch([(quality.wrap_answer(a), g, False) for a, g in pairs])
    return [(v.verdict, v.reason) for v in got]


CORRECT, MISMATCH = (VERDICT_CORRECT, None), (VERDICT_INCORRECT, "answer_mismatch")


def test_property_factorials_and_huge_numbers_never_equal_when_they_differ(math_verifier):
    pairs, expected = [], []
    for n in (30, 200, 2004):
        pairs += [(rf"\frac{{1}}{{{n}!}}", rf"\frac{{1}}{{{n + 2}!}}"),
                  (rf"\frac{{{n + 1} \cdot {n + 2}}}{{{n + 2}!}}", rf"\frac{{1}}{{{n}!}}"),
                  (rf"{n}! + 1", rf"{n}!"),
                  (rf"{n + 1}!", rf"{n + 1} \cdot {n}!")]
        expected += [MISMATCH, CORRECT, MISMATCH, CORRECT]
    for k in (64, 1000, 3000):
        pairs += [(f"2^{{{k}}}", f"2^{{{k}}}+1"), (f"4^{{{k // 2}}}", f"2^{{{k}}}"),
                  (f"10^{{{k}}}", f"10^{{{k}}}-1"), (f"10^{{-{k}}}", "0"), (str(10**k + 1), f"10^{{{k}}}+1")]
        expected += [MISMATCH, CORRECT, MISMATCH, MISMATCH, CORRECT]
    assert _judge(math_verifier, pairs) == expected
    numeric = NumericVerifier()
    for k in (20, 300, 1000):
        big = 10**k
        assert _judge(numeric, [(str(big), str(big + 1)), (str(big), str(big)), (f"1e{k}", str(big))]) == [
            MISMATCH, CORRECT, CORRECT]


NUMBERS = [("18", Fraction(18)), ("0.5", Fraction(1, 2)), ("1,250", Fraction(1250)), ("-3", Fraction(-3)),
           (r"\frac{3}{4}", Fraction(3, 4))]
UNITS = ["dollars", "cm^2", "m²", "km/h", r"\text{ cm}", r"^\circ", "degrees", "square feet", "kg", r"\text{ m}^2"]


def test_property_units_after_numbers_compare_as_the_number_in_both_verifiers(math_verifier):
    pairs, expected = [], []
    for (num, value), unit in itertools.product(NUMBERS, UNITS):
        sep = "" if unit.startswith(("^", "\\")) else " "
        answer = f"{num}{sep}{unit}"
        other = value + 1
        other_text = str(other) if other.denominator == 1 else f"{other.numerator}/{other.denominator}"
        pairs += [(answer, num), (answer, other_text)]
        expected += [CORRECT, MISMATCH]
    assert _judge(math_verifier, pairs) == expected
    assert _judge(NumericVerifier(), pairs) == expected  # the two verifiers agree


def _interval(a, b, left_closed, right_closed):
    return ("[" if left_closed else "(") + f"{a}, {b}" + ("]" if right_closed else ")")


def _inequality(a, b, left_closed, right_closed):
    le = r"\le"
    return f"{a} {le if left_closed else '<'} x {le if right_closed else '<'} {b}"


def test_property_intervals_vs_inequalities(math_verifier):
    pairs, expected = [], []
    for a, b in (("1", "2"), ("-3", r"\frac{5}{2}")):
        shapes = list(itertools.product((False, True), repeat=2))
        for s_gold, s_ans in itertools.product(shapes, repeat=2):
            same = s_gold == s_ans
            # interval gold, inequality answer
            pairs.append((_inequality(a, b, *s_ans), _interval(a, b, *s_gold)))
            if same and s_gold == (False, False):
                expected.append((VERDICT_UNKNOWN, "unconfirmed_equivalence"))  # (a, b) may be a pair
            else:
                expected.append(CORRECT if same else MISMATCH)
            # inequality gold, interval answer
            pairs.append((_interval(a, b, *s_ans), _inequality(a, b, *s_gold)))
            expected.append(CORRECT if same else MISMATCH)
    for a in ("3", "-1"):
        pairs += [(f"x > {a}", rf"({a}, \infty)"), (f"x \\ge {a}", rf"[{a}, \infty)"), (f"x > {a}", rf"[{a}, \infty)"),
                  (rf"(-\infty, {a}]", f"x \\le {a}"), (rf"(-\infty, {a})", f"x \\le {a}")]
        expected += [CORRECT, CORRECT, MISMATCH, CORRECT, MISMATCH]
    assert _judge(math_verifier, pairs) == expected


def test_property_plus_minus(math_verifier):
    pairs, expected = [], []
    for k in ("3", r"\sqrt{2}", r"\frac{1}{2}"):
        pairs += [(rf"\pm {k}", f"{k}, -{k}"), (f"{k}, -{k}", rf"\pm {k}"), (f"-{k}, {k}", rf"\pm {k}"),
                  (k, rf"\pm {k}"), (rf"\pm {k}", k), (rf"1 \pm {k}", f"1+{k}, 1-{k}"), (f"1-{k}, 1+{k}", rf"1 \pm {k}"),
                  (f"1+{k}", rf"1 \pm {k}")]
        expected += [CORRECT, CORRECT, CORRECT, MISMATCH, MISMATCH, CORRECT, CORRECT, MISMATCH]
    assert _judge(math_verifier, pairs) == expected


def test_property_sets_any_order_tuples_in_order(math_verifier):
    pairs, expected = [], []
    for elems in (("1", "2", "5"), (r"\frac{1}{2}", "-3", r"\sqrt{2}")):
        gold_set = r"\{" + ", ".join(elems) + r"\}"
        gold_tuple = "(" + ", ".join(elems) + ")"
        for perm in itertools.permutations(elems):
            pairs.append((r"\{" + ", ".join(perm) + r"\}", gold_set))
            expected.append(CORRECT)
            pairs.append(("(" + ", ".join(perm) + ")", gold_tuple))
            expected.append(CORRECT if perm == elems else MISMATCH)
        pairs.append((r"\{" + ", ".join(elems[:2]) + r"\}", gold_set))
        expected.append(MISMATCH)
    # ordered pairs whose gold cannot be an interval (first > second), and sets of pairs
    pairs += [("(5, 2)", "(5, 2)"), ("(2, 5)", "(5, 2)"), (r"\{(3, 4), (1, 2)\}", r"\{(1, 2), (3, 4)\}"),
              (r"\{(4, 3), (1, 2)\}", r"\{(1, 2), (3, 4)\}")]
    expected += [CORRECT, MISMATCH, CORRECT, MISMATCH]
    assert _judge(math_verifier, pairs) == expected


@pytest.mark.parametrize("step,states", [
    ("#### 42", True), ("#### 1,308", True), ("The answer is 39.", True), ("Final answer: 42", True),
    ("So the answer is \\boxed{26}.", True), ("The final answer is $\\boxed{5}$. I hope it is correct.", True),
    ("The answer is Tuesday.", True), ("Answer: (B)", True), ("The answer is 25 (I think).", True),
    ("#### Step 1: Cost of the apples", False), ("### Step 1", False), ("#### Final Answer", False),
    ("The answer is reasonable.", False), ("To find the answer: how many stickers does Leo keep? 6 * 8 = 48.", False),
    ("Step 3: 20 + 8 = 28.", False), ("", False),
])
def test_states_final_answer_reads_the_marker_grammar_not_headings_or_prose(step, states):
    from counterpoint.verifiers import states_final_answer

    assert states_final_answer(step) is states


def test_format_class_reasons_and_step_evidence():
    from counterpoint.verifiers import FORMAT_FAILURE_REASONS, is_format_failure, is_step_evidence

    assert FORMAT_FAILURE_REASONS == {"no_final_answer", "non_numeric_answer"}
    assert [is_format_failure(r) for r in ("no_final_answer", "non_numeric_answer", "answer_mismatch", None)] == [
        True, True, False, False]
    assert is_step_evidence("correct", None) and is_step_evidence("incorrect", "answer_mismatch")
    assert not is_step_evidence("incorrect", "non_numeric_answer") and not is_step_evidence("incorrect", "no_final_answer")
    assert not is_step_evidence("unknown", "verifier_timeout")
