"""Scores -> masks: scorers, exact top-k selection by scope, per-leaf sparsity
allocation (uniform / ERK) and sparsity schedules.

>>> import jax, jax.numpy as jnp
>>> import jaxprune as jp
>>> params = {"conv": {"kernel": jax.random.normal(jax.random.key(0), (3, 3, 8, 16))},
...           "dense": {"kernel": jax.random.normal(jax.random.key(1), (128, 16)), "bias": jnp.zeros(16)}}
>>> mask = jp.masks.topk(jp.masks.magnitude(params), 0.9)          # global, 10% kept
>>> round(jp.summarize(mask)["prunable"]["density"], 4)
0.1
>>> mask = jp.masks.topk(jp.masks.filter_norm(params), 0.5, scope="filter", params=params)
>>> per_leaf = jp.masks.allocate(params, 0.9, method="erk")
>>> mask = jp.masks.topk(jp.masks.magnitude(params), per_leaf, scope="layer")
>>> mask = jp.masks.topk(jp.masks.magnitude(params), None, scope="2:4")  # N:M: 2 of every 4 inputs
>>> round(jp.summarize(mask)["prunable"]["density"], 4)
0.5
"""

from jaxprune.masks.allocation import allocate, erk_densities
from jaxprune.masks.schedules import (
    constant_schedule,
    geometric_density,
    geometric_schedule,
    polynomial_schedule,
)
from jaxprune.masks.scorers import filter_norm, magnitude, random, snip
from jaxprune.masks.select import SCOPES, check_scope, score_keys, topk

__all__ = [
    "SCOPES",
    "allocate",
    "check_scope",
    "constant_schedule",
    "erk_densities",
    "filter_norm",
    "geometric_density",
    "geometric_schedule",
    "magnitude",
    "polynomial_schedule",
    "random",
    "score_keys",
    "snip",
    "topk",
]
