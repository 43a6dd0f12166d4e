"""Autoencoders for anomaly detection: a dense one and a convolutional one.

Both map an input to a small code and back, returning a reconstruction with the input's shape;
trained on normal data only, a row they reconstruct badly is unlike what they saw (the score of
`experiments/anomaly_detection.py`). The bottleneck is what makes that work: a wide enough
autoencoder learns the identity and reconstructs anomalies too.

- `dense_autoencoder`: flatten -> MLP encoder -> `latent` units -> mirrored MLP decoder.
- `conv_autoencoder`: strided convolutions that halve the time (series `(T, C)`, 1-D) or
  height and width (images `(H, W, C)`, 2-D) once per entry of `features`, an optional dense
  bottleneck of `latent` units, and a mirrored decoder that doubles the size with
  nearest-neighbour upsampling followed by a convolution. The convolution rank follows the
  input rank, so one model serves series and images.

By default (`upsample="nearest"`) the decoder upsamples and convolves rather than using
strided transposed convolutions (`upsample="transpose"`): that avoids their checkerboard
artifacts (Odena et al., "Deconvolution and Checkerboard Artifacts", 2016) and, on this CPU,
trained the 64-step sensor windows twice as fast to the same AUROC. On the 8x8 digits the
transposed convolutions scored a little higher, so `configs/digits_autoencoder.py` picks them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from ann.config import COUNT, NONNEGATIVE, POSITIVE, ConfigError, check_choice


def _check_sizes(name: str, values: Sequence[int], allow_empty: bool = False) -> tuple[int, ...]:
    sizes = tuple(int(v) for v in values)
    if (not sizes and not allow_empty) or any(v <= 0 for v in sizes):
        raise ConfigError(
            f"config key 'model.{name}' is {tuple(values)}; use positive layer widths, "
            f"e.g. --config.model.{name}='(64, 32)'"
        )
    return sizes


class DenseAutoencoder(nnx.Module):
    """MLP encoder `features` -> `latent`, decoder `reversed(features)` -> the input's size."""

    RANGES = {"features": COUNT, "latent": POSITIVE}  # checked with the config, before data
    CHOICES = {"norm": (None, "layer")}  # likewise

    def __init__(
        self,
        *,
        input_shape: Sequence[int],
        features: Sequence[int] = (128, 64),
        latent: int = 16,
        dropout: float = 0.0,
        norm: str | None = None,
        dtype: jnp.dtype | None = None,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        features = _check_sizes("features", features, allow_empty=True)
        check_choice("model.norm", norm, self.CHOICES["norm"])  # built without the config
        self.input_shape = tuple(int(d) for d in input_shape)
        size = math.prod(self.input_shape)
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        # Hidden widths on the way down and back up; the bottleneck layer has no activation.
        down = [size, *features]
        up = [latent, *reversed(features)]
        self.encoder = nnx.List(nnx.Linear(a, b, **kw) for a, b in zip(down[:-1], down[1:]))
        self.to_latent = nnx.Linear(down[-1], latent, **kw)
        self.decoder = nnx.List(nnx.Linear(a, b, **kw) for a, b in zip(up[:-1], up[1:]))
        self.to_output = nnx.Linear(up[-1], size, **kw)
        self.encoder_norms = nnx.data(
            nnx.List(nnx.LayerNorm(b, **kw) for b in down[1:]) if norm else None
        )
        self.decoder_norms = nnx.data(
            nnx.List(nnx.LayerNorm(b, **kw) for b in up[1:]) if norm else None
        )
        self.dropout = nnx.Dropout(dropout)

    def _hidden(self, layers, norms, x: jax.Array, rngs: jax.Array | None) -> jax.Array:
        for i, layer in enumerate(layers):
            x = layer(x)
            if norms is not None:
                x = norms[i](x)
            x = self.dropout(nnx.relu(x), rngs=rngs)
        return x

    def encode(self, x: jax.Array, *, rngs: jax.Array | None = None) -> jax.Array:
        """The code of each row: (N, latent)."""
        x = self._hidden(self.encoder, self.encoder_norms, x.reshape(x.shape[0], -1), rngs)
        return self.to_latent(x)

    def __call__(self, x: jax.Array, *, rngs: jax.Array | None = None) -> jax.Array:
        code = self.encode(x, rngs=rngs)
        out = self.to_output(self._hidden(self.decoder, self.decoder_norms, code, rngs))
        return out.reshape(x.shape)


class ConvAutoencoder(nnx.Module):
    """Strided conv encoder, optional dense bottleneck, upsample + conv decoder; 1-D for
    `(T, C)` inputs, 2-D for `(H, W, C)`. Each entry of `features` halves every spatial axis;
    sizes that do not divide by 2**len(features) are zero-padded at the end and cropped back."""

    # Checked with the config, before any data is read. latent 0 = no dense bottleneck.
    RANGES = {"features": COUNT, "kernel_size": COUNT, "latent": NONNEGATIVE}
    CHOICES = {"upsample": ("nearest", "transpose")}

    def __init__(
        self,
        *,
        input_shape: Sequence[int],
        features: Sequence[int] = (32, 64),
        kernel_size: int = 3,
        latent: int = 32,
        upsample: str = "nearest",
        dtype: jnp.dtype | None = None,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        *spatial, channels = (int(d) for d in input_shape)
        if len(spatial) not in (1, 2):
            raise ConfigError(
                f"model 'conv_autoencoder' takes series (T, C) or images (H, W, C); the data's "
                f"input shape is {tuple(input_shape)}: use model.name=dense_autoencoder"
            )
        features = _check_sizes("features", features)
        check_choice("model.upsample", upsample, self.CHOICES["upsample"])
        self.upsample = upsample
        self.spatial = tuple(spatial)
        factor = 2 ** len(features)
        self.padded = tuple(-(-n // factor) * factor for n in spatial)
        bottom = [n // factor for n in self.padded]  # spatial size of the deepest feature map
        self.bottom_shape = (*bottom, features[-1])
        kernel = (kernel_size,) * len(spatial)
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        down = [channels, *features]
        self.encoder = nnx.List(
            nnx.Conv(a, b, kernel, strides=2, **kw) for a, b in zip(down[:-1], down[1:])
        )
        # Without a dense bottleneck the code is the deepest feature map (a spatial code).
        flat = math.prod(self.bottom_shape)
        self.to_latent = nnx.data(nnx.Linear(flat, latent, **kw) if latent else None)
        self.from_latent = nnx.data(nnx.Linear(latent, flat, **kw) if latent else None)
        up = [*reversed(features), features[0]]
        if upsample == "nearest":
            layers = (nnx.Conv(a, b, kernel, **kw) for a, b in zip(up[:-1], up[1:]))
        else:
            layers = (
                nnx.ConvTranspose(a, b, kernel, strides=2, **kw) for a, b in zip(up[:-1], up[1:])
            )
        self.decoder = nnx.List(layers)
        self.to_output = nnx.Conv(features[0], channels, kernel, **kw)

    def encode(self, x: jax.Array, *, rngs: jax.Array | None = None) -> jax.Array:
        """The code of each row: (N, latent), or the deepest feature map when latent=0."""
        del rngs  # no dropout here; the argument keeps the models' common signature
        pad = [(0, 0), *((0, p - n) for p, n in zip(self.padded, self.spatial)), (0, 0)]
        x = jnp.pad(x, pad)
        for conv in self.encoder:
            x = nnx.relu(conv(x))
        if self.to_latent is not None:
            x = self.to_latent(x.reshape(x.shape[0], -1))
        return x

    def __call__(self, x: jax.Array, *, rngs: jax.Array | None = None) -> jax.Array:
        code = self.encode(x, rngs=rngs)
        if self.from_latent is not None:
            code = nnx.relu(self.from_latent(code)).reshape(x.shape[0], *self.bottom_shape)
        y = code
        for conv in self.decoder:
            if self.upsample == "nearest":  # double each side, then convolve
                for axis in range(1, 1 + len(self.spatial)):
                    y = jnp.repeat(y, 2, axis=axis)
            y = nnx.relu(conv(y))
        y = self.to_output(y)
        crop = (slice(None), *(slice(0, n) for n in self.spatial), slice(None))
        return y[crop]
