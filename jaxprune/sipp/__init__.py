"""SiPP: sensitivity-informed provable pruning (Baykal, Liebenwein et al.).

>>> import flax.linen as nn, jax
>>> import jaxprune as jp
>>> model = nn.Sequential([nn.Dense(32), nn.relu, nn.Dense(10)])
>>> x_val = jax.random.normal(jax.random.key(0), (200, 64))         # stand-in validation inputs
>>> params = model.init(jax.random.key(1), x_val)["params"]
>>> f = lambda p, x: model.apply({"params": p}, x)
>>> n = jp.sipp.sample_size(jp.sipp.layer_output_sizes(f, params, x_val[:1]))
>>> n                                                     # ceil(3 ln(8 * 32 * 42 / 1e-16))
139
>>> s = jp.sipp.sensitivity(f, params, x_val[:n])
>>> new_params, mask, report = jp.sipp.prune(params, s, 0.1)   # or variant="hybrid", key=..., stats=...
>>> report["kept"] == report["budget"] == round(0.1 * (64 * 32 + 32 * 10))    # 10% of the kernels
True
"""

from jaxprune.sipp.optalloc import allocate, eps_rand, group_stats, optalloc
from jaxprune.sipp.sample_size import layer_output_sizes, sample_size
from jaxprune.sipp.sensitivity import (
    PATCH_REDUCES,
    conv_patches,
    layer_stats,
    make_sensitivity_fn,
    sensitivity,
)
from jaxprune.sipp.sparsify import VARIANTS, draws_for_unique, prune

__all__ = [
    "PATCH_REDUCES",
    "VARIANTS",
    "allocate",
    "conv_patches",
    "draws_for_unique",
    "eps_rand",
    "group_stats",
    "layer_output_sizes",
    "layer_stats",
    "make_sensitivity_fn",
    "optalloc",
    "prune",
    "sample_size",
    "sensitivity",
]
