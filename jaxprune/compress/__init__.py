"""Real compression of structured-pruned models (issue 19, METHODS.md section 8).

- :mod:`jaxprune.compress.graph`: the channel dependency graph of a forward
  pass, traced from its jaxpr;
- :mod:`jaxprune.compress.compact`: :func:`compact` removes pruned units /
  filters and their coupled dimensions, returning a smaller dense model;
- :mod:`jaxprune.compress.groups`: :func:`structure_groups`, the structure
  groups ``compact`` removes as a jittable mask function, to train the model
  that compaction keeps (structured DPF);
- :mod:`jaxprune.compress.sparse_file`: :func:`save_sparse` / :func:`load_sparse`,
  a file of coded masks plus kept values for unstructured-sparse params.
"""

from jaxprune.compress.compact import Compacted, CompactReport, KeptChannels, LayerChange, compact
from jaxprune.compress.graph import ChannelGraph, trace
from jaxprune.compress.groups import structure_groups
from jaxprune.compress.sparse_file import load_sparse, save_sparse

__all__ = [
    "ChannelGraph",
    "CompactReport",
    "Compacted",
    "KeptChannels",
    "LayerChange",
    "compact",
    "load_sparse",
    "save_sparse",
    "structure_groups",
    "trace",
]
