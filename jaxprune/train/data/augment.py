"""On-device CIFAR data augmentation (run inside the jitted train step)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxprune._validate import check_choice


@functools.partial(jax.jit, static_argnames=("pad", "mode"))
def augment_cifar(key: jax.Array, x: jax.Array, *, pad: int = 4, mode: str = "reflect") -> jax.Array:
    """Standard CIFAR augmentation, independently per example: pad each side by
    ``pad`` pixels, take a random crop of the original size (offsets uniform in
    [0, 2 * pad]), and flip horizontally with probability 1/2.

    x: (N, H, W, C) float images (normalized). ``mode``: "reflect" (default)
    or "constant" (zero padding, i.e. the channel mean after normalization,
    as torchvision's ``RandomCrop(32, padding=4)``). Returns (N, H, W, C)."""
    check_choice("mode", mode, ("reflect", "constant"))
    if x.ndim != 4:
        raise ValueError(f"x must be (N, H, W, C) images, got shape {x.shape}")
    if not isinstance(pad, int) or pad < 0:
        raise ValueError(f"pad={pad!r} is not valid; expected an integer >= 0")
    n, h, w, c = x.shape
    k_crop, k_flip = jax.random.split(key)
    offsets = jax.random.randint(k_crop, (n, 2), 0, 2 * pad + 1)
    flips = jax.random.bernoulli(k_flip, 0.5, (n,))
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode=mode)

    def crop(img: jax.Array, off: jax.Array) -> jax.Array:
        return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, c))

    out = jax.vmap(crop)(padded, offsets)
    return jnp.where(flips[:, None, None, None], out[:, :, ::-1, :], out)
