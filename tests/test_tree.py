"""jaxprune.tree on linen-style dicts, nnx.State, lists and None mask leaves."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxprune as jp
from jaxprune import tree


def _params():
    return {
        "Dense_0": {"kernel": jnp.arange(12.0).reshape(3, 4) - 5.0, "bias": jnp.ones(4)},
        "Conv_0": {"kernel": jnp.ones((2, 2, 1, 3)), "bias": jnp.zeros(3)},
        "BatchNorm_0": {"scale": jnp.ones(3)},
    }


def test_prunable_default_is_ndim_at_least_two():
    flags = jp.prunable(_params())
    assert flags["Dense_0"]["kernel"] and flags["Conv_0"]["kernel"]
    assert not flags["Dense_0"]["bias"] and not flags["BatchNorm_0"]["scale"]


def test_prunable_include_and_exclude_regex():
    flags = jp.prunable(_params(), include="kernel|scale", exclude="^Conv")
    assert flags["Dense_0"]["kernel"] and flags["BatchNorm_0"]["scale"]
    assert not flags["Conv_0"]["kernel"] and not flags["Dense_0"]["bias"]
    with pytest.raises(ValueError, match="include"):
        jp.prunable(_params(), include="(")


def test_apply_mask_passes_none_leaves_and_zeros_pruned():
    params = _params()
    mask = tree.full_mask(params)
    mask["Dense_0"]["kernel"] = params["Dense_0"]["kernel"] > 0
    out = jax.jit(jp.apply_mask)(params, mask)
    expected = np.where(np.arange(12).reshape(3, 4) - 5 > 0, np.arange(12).reshape(3, 4) - 5, 0)
    np.testing.assert_array_equal(out["Dense_0"]["kernel"], expected)
    np.testing.assert_array_equal(out["Dense_0"]["bias"], params["Dense_0"]["bias"])
    assert mask["BatchNorm_0"]["scale"] is None


def test_apply_mask_rejects_mismatched_trees():
    params = _params()
    bad = {"Dense_0": {"kernel": jnp.ones((3, 4), bool)}}
    with pytest.raises(ValueError, match="only in params"):
        jp.apply_mask(params, bad)


def test_works_on_nnx_state_and_lists():
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)
    flags = jp.prunable(state)
    assert sorted(jax.tree.leaves(flags)) == [False, True]
    masked = jp.apply_mask(state, tree.full_mask(state))
    chex_leaves = jax.tree.leaves(masked)
    assert len(chex_leaves) == 2
    lst = [jnp.ones((2, 2)), jnp.ones(2)]
    assert jp.prunable(lst) == [True, False]


def test_summarize_counts_density():
    params = _params()
    mask = tree.full_mask(params)
    mask["Dense_0"]["kernel"] = jnp.zeros((3, 4), bool).at[0].set(True)
    report = jp.summarize(mask)
    assert report["prunable"]["size"] == 12 + 12
    assert report["prunable"]["nonzero"] == 4 + 12
    pruned = jp.summarize(jp.apply_mask(params, mask))
    # Dense kernel: row 0 is [-5,-4,-3,-2], all nonzero; conv kernel all ones.
    assert pruned["leaves"]["Dense_0/kernel"]["nonzero"] == 4
    assert pruned["all"]["size"] == 12 + 4 + 12 + 3 + 3


def test_neuron_view_last_axis_is_unit():
    conv = jnp.arange(2 * 2 * 3 * 5.0).reshape(2, 2, 3, 5)
    view = tree.neuron_view(conv)
    assert view.shape == (12, 5)
    np.testing.assert_array_equal(view[:, 1], np.asarray(conv)[..., 1].ravel())


def test_check_mask_shapes_names_the_leaf():
    params = _params()
    mask = tree.full_mask(params)
    tree.check_mask_shapes(params, mask)
    mask["Conv_0"]["kernel"] = jnp.ones((2, 2, 1, 4), bool)
    with pytest.raises(ValueError, match=r"Conv_0/kernel has shape \(2, 2, 1, 4\)"):
        tree.check_mask_shapes(params, mask)
