"""A ResNet (He et al. 2016) sized for small images, with BatchNorm."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from ann.config import COUNT, SIZES


class Block(nnx.Module):
    """Two 3x3 convs with BatchNorm and a projected shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int, kw: dict):
        self.conv1 = nnx.Conv(cin, cout, (3, 3), strides=stride, use_bias=False, **kw)
        self.bn1 = nnx.BatchNorm(cout, **kw)
        self.conv2 = nnx.Conv(cout, cout, (3, 3), use_bias=False, **kw)
        self.bn2 = nnx.BatchNorm(cout, scale_init=nnx.initializers.zeros, **kw)
        self.proj = self.proj_bn = nnx.data(None)
        if stride != 1 or cin != cout:
            self.proj = nnx.Conv(cin, cout, (1, 1), strides=stride, use_bias=False, **kw)
            self.proj_bn = nnx.BatchNorm(cout, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = nnx.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        shortcut = x if self.proj is None else self.proj_bn(self.proj(x))
        return nnx.relu(y + shortcut)


class ResNet(nnx.Module):
    INPUT_RANK = 3  # images [height, width, channels]: `ann.models.build` checks it
    RANGES = {"widths": SIZES, "blocks_per_stage": COUNT}  # checked with the config

    def __init__(
        self,
        *,
        input_shape: Sequence[int],
        num_classes: int,
        widths: Sequence[int] = (32, 64),
        blocks_per_stage: int = 2,
        dtype: jnp.dtype | None = None,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.stem = nnx.Conv(input_shape[-1], widths[0], (3, 3), use_bias=False, **kw)
        self.stem_bn = nnx.BatchNorm(widths[0], **kw)
        blocks = []
        cin = widths[0]
        for stage, width in enumerate(widths):
            for b in range(blocks_per_stage):
                stride = 2 if stage > 0 and b == 0 else 1
                blocks.append(Block(cin, width, stride, kw))
                cin = width
        self.blocks = nnx.List(blocks)
        self.head = nnx.Linear(cin, num_classes, **kw)

    def __call__(self, x: jax.Array, *, rngs: jax.Array | None = None) -> jax.Array:
        del rngs  # no dropout
        x = nnx.relu(self.stem_bn(self.stem(x)))
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean(axis=(1, 2)))
