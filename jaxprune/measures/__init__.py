"""Sparsity and pruning measures (pure, jittable functions).

- :mod:`.sparsity`: ``lq_norm``, ``pq_index``, ``pqi_bound``, ``sparsity_index``,
  ``abp_retained``, ``gini``, ``hoyer`` (pytree measures with scopes
  ``"global"`` / ``"layer"`` / ``"neuron"``).
- :mod:`.latent`: ``ap2``, ``ap3_gaussian``, ``ap3_student_t``,
  ``nondiagonal_covariance`` (AP2/AP3 of Mozafarinia & Yasaei Sekeh).
- :mod:`.masks_stats`: ``pruning_quality`` (DPF's delta), ``mask_iou``, ``mask_flips``.
- :mod:`.cost`: ``cost``, parameters and multiply-accumulates (dense and kept
  under a mask) of any model, read from its jaxpr.
"""

from jaxprune.measures.cost import cost
from jaxprune.measures.latent import ap2, ap3_gaussian, ap3_student_t, nondiagonal_covariance
from jaxprune.measures.masks_stats import mask_flips, mask_iou, pruning_quality
from jaxprune.measures.sparsity import abp_retained, gini, hoyer, lq_norm, pq_index, pqi_bound, sparsity_index

__all__ = [
    "abp_retained",
    "ap2",
    "ap3_gaussian",
    "ap3_student_t",
    "cost",
    "gini",
    "hoyer",
    "lq_norm",
    "mask_flips",
    "mask_iou",
    "nondiagonal_covariance",
    "pq_index",
    "pqi_bound",
    "pruning_quality",
    "sparsity_index",
]
