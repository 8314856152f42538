"""Adaptive backward pruning (Yang et al., "A theoretical understanding of
neural network compression from sparse linear approximation"): ABP-M, ABP-L
and the per-neuron magnitude baseline.

``prune`` walks the dense layers from the output back to the input and
replaces every neuron's incoming weights by a sparse refit
(:mod:`jaxprune.abp.prune`); the least-squares and LASSO solvers work from
Gram statistics (:mod:`jaxprune.abp.solvers`).
"""

from jaxprune.abp.prune import METHODS, LayerReport, PruneReport, keep_largest, layer_stats, prune
from jaxprune.abp.solvers import GramStats, LassoInfo, batch_stats, lasso_fista, masked_lstsq, merge_stats

__all__ = [
    "METHODS",
    "GramStats",
    "LassoInfo",
    "LayerReport",
    "PruneReport",
    "batch_stats",
    "keep_largest",
    "lasso_fista",
    "layer_stats",
    "masked_lstsq",
    "merge_stats",
    "prune",
]
