"""SiPP: sensitivity-informed provable pruning (Baykal, Liebenwein et al.).

>>> import jaxprune as jp
>>> f = lambda p, x: model.apply({"params": p}, x)
>>> n = jp.sipp.sample_size(jp.sipp.layer_output_sizes(f, params, x_val[:1]))   # LeNet-300-100: 152
>>> s = jp.sipp.sensitivity(f, params, x_val[:n])
>>> new_params, mask, report = jp.sipp.prune(params, s, 0.1, variant="hybrid", key=key,
...                                          stats=jp.sipp.layer_stats(f, params, x_val[:n]))
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
