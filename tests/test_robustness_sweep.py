"""The robustness sweep's classifier and references (experiments/robustness_sweep.py, issue 17):
a fixed subset of the sweep's cases must classify as ok, and deliberately wrong fake
functions must classify as silent_wrong / bad_error (the classifier can fail)."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import robustness_sweep as rs

SUBSET = [
    "pq_index/subnormal",
    "pq_index/near_max/jit",
    "gini/mixed_scale",
    "hoyer/bfloat16",
    "pq_index/nan/eager",
    "pq_index/nan/jit",
    "pqi_bound/inf/jit",
    "sparsity_index/nan_mask",
    "gini/complex",
    "pq_index/p_eq_q",
    "topk/global/sparsity_above",
    "topk/layer/traced_sparsity_above",
    "topk/subnormal",
    "topk/nm_2:4",
    "topk/mask_nan",
    "topk/global/value_0.25",
]


@pytest.fixture(scope="module")
def cases():
    built = {c.name: c for c in rs.measure_cases() + rs.topk_cases()}
    return [built[name] for name in SUBSET]


def test_fixed_subset_is_ok(cases):
    results = {c.name: rs.classify(c) for c in cases}
    assert all(cls == "ok" for cls, _ in results.values()), {k: v for k, v in results.items() if v[0] != "ok"}


def test_classifier_catches_wrong_results():
    w = jnp.array([1e-40, 2e-40, 0.0, 0.0], jnp.float32)
    ref = rs.ref_pq(w)
    assert ref == pytest.approx(1 - (0.25 * (1 + math.sqrt(2))) ** 2 / (0.25 * 3) ** 1, abs=1e-3)
    wrong = rs.Case("fake", "flushed", lambda: jnp.float32(0.0), rs.value(ref, atol=2e-6))  # what FTZ gave
    assert rs.classify(wrong)[0] == "silent_wrong"
    accepted = rs.Case("fake", "accepts_bad", lambda: jnp.float32(0.5), rs.error("sparsity"))
    assert rs.classify(accepted)[0] == "silent_wrong"
    plausible = rs.Case("fake", "finite_for_nan", lambda: jnp.float32(0.0), rs.nan())
    assert rs.classify(plausible)[0] == "silent_wrong"
    count = rs.Case("fake", "count_for_nan", lambda: jnp.int32(4), rs.nan())
    assert rs.classify(count)[0] == "silent_wrong"
    prop = rs.Case(
        "fake",
        "nan_weights",
        lambda: jnp.array([jnp.nan]),
        rs.check(lambda o: bool(np.all(np.isfinite(o))) or "NaN in weights"),
    )
    assert rs.classify(prop) == ("silent_wrong", "NaN in weights")


def test_classifier_grades_errors():
    def index_error():
        return (1,)[3]

    def vague():
        raise ValueError("bad input")

    def named():
        raise ValueError("sparsity=1.5 is outside the valid range [0, 1]")

    assert rs.classify(rs.Case("fake", "bare", index_error, rs.error("sparsity")))[0] == "bad_error"
    assert rs.classify(rs.Case("fake", "vague", vague, rs.error("sparsity")))[0] == "bad_error"
    assert rs.classify(rs.Case("fake", "named", named, rs.error("sparsity")))[0] == "ok"
    # a refusal of a valid input is bad_error, unless the case lists refusal words
    assert rs.classify(rs.Case("fake", "refused", named, rs.value(0.5)))[0] == "bad_error"
    assert rs.classify(rs.Case("fake", "may_refuse", named, rs.value(0.5, refuse=("sparsity",))))[0] == "ok"


def test_references_against_hand_values():
    one_hot = np.array([1.0, 0.0, 0.0, 0.0])
    assert rs.ref_pq(one_hot) == pytest.approx(0.75)
    assert rs.ref_pqi_bound(one_hot) == 1 and rs.ref_pqi_bound(np.ones(4)) == 4
    assert rs.ref_si(np.ones(4)) == pytest.approx(0.25)  # d^(1 - 1/q), q = 1/2
    assert rs.ref_gini(one_hot) == pytest.approx(0.75) and rs.ref_gini(np.ones(4)) == pytest.approx(0.0)
    assert rs.ref_hoyer(one_hot) == pytest.approx(1.0) and rs.ref_hoyer(np.ones(4)) == pytest.approx(0.0)
    assert rs.ref_lq(np.array([3.0, -4.0]), 2.0) == pytest.approx(5.0)
    np.testing.assert_array_equal(
        rs.ref_topk(np.array([1.0, 3.0, 3.0, 2.0]), 0.5), [False, True, True, False]
    )


def test_driver_reports_hang_crash_and_wrong():
    """The subprocess driver: a case past the time limit is a hang, a dying worker a bad_error,
    and the sweep resumes with the next case."""
    results = rs.run_sweep(2.0, selftest=True)
    assert [(r["name"], r["class"]) for r in results] == [
        ("hang", "hang"), ("crash", "bad_error"), ("wrong", "silent_wrong"), ("right", "ok")]
