"""GN-LeNet's layers with backward passes that stay fast inside loops (`lax.scan`, `lax.map`).

XLA's CPU backend runs the *gradient* of a convolution as a slow generic kernel once the
convolution sits inside a loop body (the engine's local steps are a `lax.scan`, its nodes a
`vmap` or `lax.map`). Measured on 2 CPU cores (jax 0.10.2, batch 8, ms per step inside a scan;
benchmarks/cnn_training.py, section g): GN-LeNet's second layer (16x16, 32 -> 32) forward 1.0,
input gradient 45, weight gradient 62 (about 1 ms each called alone); the first layer 18 and 21.
Forward convolutions stay fast in loops. So `conv2d_same` carries a `jax.custom_vjp` whose
backward pass is made of forward convolutions only (1.0 and 1.4 ms for the second layer):

    y  = conv(x, W)                 x (B, H, W, Ci), W (kh, kw, Ci, Co), "SAME" padding
    dx = conv(dy, flip(W)^T)        the kernel flipped in both spatial axes, Ci and Co swapped;
                                    padding (hi, lo) where the forward pads (lo, hi)
    dW = conv(pad(x)^T, dy^T)       "VALID"; the padded x transposed to (Ci, H', W', B) (its batch
                                    axis becomes the contracted feature axis), dy to an (H, W, B,
                                    Co) kernel; out (Ci, kh, kw, Co) -> (kh, kw, Ci, Co)

Both are exact rearrangements of the same sums (tests/test_conv.py: equal to `jax.grad` of
`lax.conv_general_dilated` to float rounding, for every GN-LeNet layer, under `vmap` and `scan`).

`max_pool_2x2` is 2x2 max pooling, stride 2, with a backward pass that is a mask and a multiply
(reshape to (B, H/2, 2, W/2, 2, C), the first maximum of each window) instead of XLA's
select-and-scatter; ties go to the first element of the window in row-major order, as
`jax.grad` of `flax.linen.max_pool` does.

`flax_conv_general_dilated` adapts `conv2d_same` to the signature of `lax.conv_general_dilated`,
so `flax.linen.Conv(..., conv_general_dilated=flax_conv_general_dilated)` keeps its parameter
names, shapes and initialisation (`divjax.tasks.models.GNLeNet` uses it); any call that is not a
stride-1 "SAME" NHWC/HWIO convolution falls back to `lax.conv_general_dilated`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

_DN = ("NHWC", "HWIO", "NHWC")


def _same_pads(kh: int, kw: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """XLA's "SAME" padding for stride 1: (k - 1) // 2 before, the rest after."""
    return ((kh - 1) // 2, kh - 1 - (kh - 1) // 2), ((kw - 1) // 2, kw - 1 - (kw - 1) // 2)


def _conv_fwd_plain(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """The forward convolution; 3 input channels (the RGB image) are zero-padded to 4.

    XLA CPU runs GN-LeNet's first layer (3 -> 32 channels) 3x faster with a zero fourth input
    channel (measured inside a scan on 2 cores: 0.55 ms vs 1.8 ms at batch 8); the zeros add
    nothing to the sums.
    """
    ci = x.shape[-1]
    if ci == 3:
        x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, 1)))
        kernel = jnp.pad(kernel, ((0, 0), (0, 0), (0, 1), (0, 0)))
    return lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=_DN)


@jax.custom_vjp
def conv2d_same(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """(B, H, W, Ci) NHWC, (kh, kw, Ci, Co) HWIO -> (B, H, W, Co); stride 1, "SAME", no bias.

    The value is `lax.conv_general_dilated(x, kernel, (1, 1), "SAME")` (with a zero fourth
    input channel when Ci = 3: equal to float rounding); the gradient is
    computed with forward convolutions only (module docstring), which stay fast inside
    `lax.scan`/`lax.map`/`vmap` on CPU.
    """
    return _conv_fwd_plain(x, kernel)


def _conv2d_same_fwd(x, kernel):
    return _conv_fwd_plain(x, kernel), (x, kernel)


def _conv2d_same_bwd(res, dy):
    x, kernel = res                                          # (B,H,W,Ci), (kh,kw,Ci,Co)
    kh, kw = kernel.shape[:2]
    (lo_h, hi_h), (lo_w, hi_w) = _same_pads(kh, kw)
    # input gradient: dy correlated with the kernel flipped in space, Ci <-> Co
    k_t = jnp.swapaxes(kernel[::-1, ::-1], 2, 3)             # (kh, kw, Co, Ci)
    dx = lax.conv_general_dilated(dy, k_t, (1, 1), ((hi_h, lo_h), (hi_w, lo_w)),
                                  dimension_numbers=_DN)
    # weight gradient: the batch axis contracted. The padded x as an NHWC image (Ci, H', W', B),
    # dy as an HWIO kernel (H, W, B, Co); the output (Ci, kh, kw, Co) -> (kh, kw, Ci, Co).
    # Explicit transposes, not dimension_numbers=("CHWN", "IHWO", "HWNC"): with the latter XLA
    # CPU runs the convolution 20-50x slower inside a loop (measured in a scan: 20 vs 0.6 ms
    # for GN-LeNet's first layer, 63 vs 1.2 ms for its second).
    xp = jnp.pad(x, ((0, 0), (lo_h, hi_h), (lo_w, hi_w), (0, 0)))
    dk = lax.conv_general_dilated(xp.transpose(3, 1, 2, 0), dy.transpose(1, 2, 0, 3), (1, 1),
                                  "VALID", dimension_numbers=_DN).transpose(1, 2, 0, 3)
    return dx.astype(x.dtype), dk.astype(kernel.dtype)


conv2d_same.defvjp(_conv2d_same_fwd, _conv2d_same_bwd)


def _is_nhwc_hwio(dimension_numbers) -> bool:
    if dimension_numbers is None:
        return False
    if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
        return tuple(dimension_numbers) == ((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))
    return tuple(dimension_numbers) == _DN


def flax_conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                              rhs_dilation=None, dimension_numbers=None,
                              feature_group_count=1, batch_group_count=1, precision=None,
                              preferred_element_type=None):
    """`lax.conv_general_dilated`'s signature; the stride-1 "SAME" 2-D case runs `conv2d_same`.

    For `flax.linen.Conv(conv_general_dilated=...)`. Everything else (strides, dilation,
    groups, other layouts, explicit padding, a precision or output type) goes to
    `lax.conv_general_dilated` unchanged.
    """
    ones = (1,) * (lhs.ndim - 2)
    simple = (lhs.ndim == 4 and tuple(window_strides) == ones
              and (lhs_dilation is None or tuple(lhs_dilation) == ones)
              and (rhs_dilation is None or tuple(rhs_dilation) == ones)
              and isinstance(padding, str) and padding == "SAME"
              and feature_group_count == 1 and batch_group_count == 1
              and precision is None and preferred_element_type is None
              and _is_nhwc_hwio(dimension_numbers))
    if simple:
        return conv2d_same(lhs, rhs)
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                    rhs_dilation, dimension_numbers, feature_group_count,
                                    batch_group_count, precision, preferred_element_type)


@jax.custom_vjp
def max_pool_2x2(x: jax.Array) -> jax.Array:
    """(B, H, W, C) -> (B, H/2, W/2, C): 2x2 max pooling, stride 2 (H and W even).

    Equal to `flax.linen.max_pool(x, (2, 2), strides=(2, 2))`; the gradient goes to the first
    maximum of each window (row-major), as that of `flax.linen.max_pool` does.
    """
    return _pool_windows(x).max(axis=(2, 4))


def _pool_windows(x):
    B, H, W, C = x.shape
    return x.reshape(B, H // 2, 2, W // 2, 2, C)


def _first_max_mask(x):
    """(B, H, W, C) -> (B, H/2, 2, W/2, 2, C) bool: the first maximum of each 2x2 window."""
    B, H, W, C = x.shape
    win = _pool_windows(x).transpose(0, 1, 3, 2, 4, 5).reshape(B, H // 2, W // 2, 4, C)
    first = jnp.argmax(win, axis=3)                                          # (B, H/2, W/2, C)
    mask = first[:, :, :, None, :] == jnp.arange(4)[None, None, None, :, None]
    return mask.reshape(B, H // 2, W // 2, 2, 2, C).transpose(0, 1, 3, 2, 4, 5)


def _max_pool_fwd(x):
    return max_pool_2x2(x), x


def _max_pool_bwd(x, dy):
    mask = _first_max_mask(x)                                # (B, H/2, 2, W/2, 2, C)
    dx = jnp.where(mask, dy[:, :, None, :, None, :], 0.0)
    return (dx.reshape(x.shape).astype(x.dtype),)


max_pool_2x2.defvjp(_max_pool_fwd, _max_pool_bwd)
