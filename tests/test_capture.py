"""jaxprune.capture: layer inputs/outputs of a linen model, checked by hand."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxprune.capture import capture_layers


class _Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(3, (2, 2), strides=2, padding="VALID")(x)
        x = nn.relu(x).reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(4)(x))
        return nn.Dense(2)(x)


def test_capture_matches_manual_forward():
    model = _Net()
    x = jax.random.normal(jax.random.key(0), (5, 4, 4, 1))
    params = model.init(jax.random.key(1), x)["params"]
    layers = capture_layers(lambda p, v: model.apply({"params": p}, v), params, x)
    assert list(layers) == ["Conv_0/kernel", "Dense_0/kernel", "Dense_1/kernel"]
    np.testing.assert_allclose(layers["Conv_0/kernel"].inputs, x)
    assert layers["Conv_0/kernel"].module.strides == 2
    h = np.maximum(np.asarray(layers["Conv_0/kernel"].outputs), 0).reshape(5, -1)
    np.testing.assert_allclose(layers["Dense_0/kernel"].inputs, h, rtol=1e-6)
    w, b = params["Dense_0"]["kernel"], params["Dense_0"]["bias"]
    np.testing.assert_allclose(layers["Dense_0/kernel"].outputs, h @ np.asarray(w) + np.asarray(b), rtol=1e-5)
    logits = model.apply({"params": params}, x)
    np.testing.assert_allclose(layers["Dense_1/kernel"].outputs, logits, rtol=1e-6)


def test_capture_rejects_shared_layers():
    class Shared(nn.Module):
        @nn.compact
        def __call__(self, x):
            layer = nn.Dense(3)
            return layer(layer(x))

    model = Shared()
    x = jnp.ones((2, 3))
    params = model.init(jax.random.key(0), x)["params"]
    with pytest.raises(ValueError, match="more than once"):
        capture_layers(lambda p, v: model.apply({"params": p}, v), params, x)
