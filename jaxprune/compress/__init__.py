"""Masks -> real savings.

- :mod:`.sparse_file`: ``save_sparse`` / ``load_sparse``, a file of coded
  masks plus kept values for unstructured-sparse params.
"""

from jaxprune.compress.sparse_file import load_sparse, save_sparse

__all__ = ["load_sparse", "save_sparse"]
