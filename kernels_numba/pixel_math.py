"""The per-output-pixel math, written once and compiled for both the CPU (njit) and CUDA kernels.

Functions decorated with ``register_jitable`` are callable from ``numba.njit`` and ``numba.cuda.jit``
code alike (and as plain Python under the CUDA simulator). Tap positions are computed in float64
(a 4000-pixel axis needs more than float32's 24 bits for exact weights); pixel sums run in float32.
The antialiased path is separable (rows, then columns), as PIL computes it.
"""
from __future__ import annotations

import numpy as np
from numba.extending import register_jitable

from .arrays import Norm, Output, Params, Pixels, Rows

# Columns of the per-image parameter row that geometry.py fills (float64; offsets stay exact below 2**53
# bytes). ROWS_START, ROW_LO and ROW_COUNT place the image's horizontally filtered rows (antialiased path)
# in the row buffer.
SCALE_Y, SCALE_X, OFFSET_Y, OFFSET_X, Y0, Y1, X0, X1, START, HEIGHT, WIDTH, ROWS_START, ROW_LO, ROW_COUNT = range(14)
PARAM_COLUMNS = ROW_COUNT + 1
# Rows of the normalisation table: out = pixel * SCALE + BIAS; PAD is the normalised pad pixel.
NORM_SCALE, NORM_BIAS, NORM_PAD = range(3)


@register_jitable
def bilinear_taps(o: int, window_start: float, scale: float, offset: float, size: int) -> tuple[int, int, np.float32]:
    """Clamped source coordinate of output index ``o`` (half-pixel centres): (lower tap, upper tap, weight)."""
    s = (o - window_start + 0.5) * scale + offset - 0.5
    if s < 0.0:
        s = 0.0
    if s > size - 1.0:
        s = size - 1.0
    i0 = int(s)  # s >= 0, so truncation is floor
    i1 = i0 + 1 if i0 + 1 < size else size - 1
    return i0, i1, np.float32(s - i0)


@register_jitable
def antialias_window(o: float, window_start: float, scale: float, offset: float,
                     size: int) -> tuple[int, int, float, float]:
    """PIL's bilinear (triangle) filter window for output index ``o``: (first tap, end, centre, 1/support).

    Like PIL, the window is clipped to the image and the weights are renormalised over what remains."""
    center = (o - window_start + 0.5) * scale + offset
    support = scale if scale > 1.0 else 1.0
    lo = int(center - support + 0.5)
    if lo < 0:
        lo = 0
    hi = int(center + support + 0.5)
    if hi > size:
        hi = size
    return lo, hi, center, 1.0 / support


@register_jitable
def triangle_weight(distance: np.float32, inv_support: np.float32) -> np.float32:
    """Weight of a tap at ``distance`` (float32, in source pixels) from the filter centre."""
    w = np.float32(1.0) - abs(distance) * inv_support
    return w if w > np.float32(0.0) else np.float32(0.0)


@register_jitable
def store_pixel(out: Output, n: int, oy: int, ox: int, v0: np.float32, v1: np.float32, v2: np.float32, norm: Norm,
                swap_rb: bool) -> None:
    """Normalise the three input-order channel values and store them as RGB planes."""
    if swap_rb:
        v0, v2 = v2, v0
    out[n, 0, oy, ox] = v0 * norm[NORM_SCALE, 0] + norm[NORM_BIAS, 0]
    out[n, 1, oy, ox] = v1 * norm[NORM_SCALE, 1] + norm[NORM_BIAS, 1]
    out[n, 2, oy, ox] = v2 * norm[NORM_SCALE, 2] + norm[NORM_BIAS, 2]


@register_jitable
def padded(g: Params, norm: Norm, out: Output, n: int, oy: int, ox: int) -> bool:
    """Whether output pixel (oy, ox) of image n lies outside the resized image's box (g: its parameter row); if so
    it is written with the padding value."""
    if oy < g[Y0] or oy >= g[Y1] or ox < g[X0] or ox >= g[X1]:
        for c in range(3):
            out[n, c, oy, ox] = norm[NORM_PAD, c]
        return True
    return False


@register_jitable
def write_output_pixel(src: Pixels, params: Params, norm: Norm, swap_rb: bool, out: Output, n: int, oy: int,
                       ox: int) -> None:
    """Compute output pixel (oy, ox) of image n: padding, or 4-tap bilinear (no antialias)."""
    g = params[n]
    if padded(g, norm, out, n, oy, ox):
        return
    h = int(g[HEIGHT])
    w = int(g[WIDTH])
    base = int(g[START])
    y0, y1, fy = bilinear_taps(oy, g[Y0], g[SCALE_Y], g[OFFSET_Y], h)
    x0, x1, fx = bilinear_taps(ox, g[X0], g[SCALE_X], g[OFFSET_X], w)
    p00 = base + (y0 * w + x0) * 3
    p01 = base + (y0 * w + x1) * 3
    p10 = base + (y1 * w + x0) * 3
    p11 = base + (y1 * w + x1) * 3
    v = blend_taps(src, p00, p01, p10, p11, fx, fy)
    store_pixel(out, n, oy, ox, v[0], v[1], v[2], norm, swap_rb)


@register_jitable
def blend_taps(src: Pixels, p00: int, p01: int, p10: int, p11: int, fx: np.float32,
               fy: np.float32) -> tuple[np.float32, np.float32, np.float32]:
    """Bilinear blend of the 4 taps for each of the 3 channels."""
    c0 = lerp2(src, p00, p01, p10, p11, fx, fy, 0)
    c1 = lerp2(src, p00, p01, p10, p11, fx, fy, 1)
    c2 = lerp2(src, p00, p01, p10, p11, fx, fy, 2)
    return c0, c1, c2


@register_jitable
def lerp2(src: Pixels, p00: int, p01: int, p10: int, p11: int, fx: np.float32, fy: np.float32, c: int) -> np.float32:
    """Bilinear blend of channel c."""
    v00 = np.float32(src[p00 + c])
    v01 = np.float32(src[p01 + c])
    v10 = np.float32(src[p10 + c])
    v11 = np.float32(src[p11 + c])
    top = v00 + (v01 - v00) * fx
    bottom = v10 + (v11 - v10) * fx
    return top + (bottom - top) * fy


# ---- antialiased resize, separable like PIL: a horizontal pass over the source rows the output needs
# ---- (into a float32 buffer of rows x output width x 3), then a vertical pass that writes the output.

@register_jitable
def filter_row_pixel(src: Pixels, params: Params, rows: Rows, out_w: int, n: int, r: int, ox: int) -> None:
    """Horizontal pass: source row ROW_LO + r of image n filtered at output column ox, 3 channels into ``rows``."""
    g = params[n]
    if r >= g[ROW_COUNT] or ox < g[X0] or ox >= g[X1]:
        return
    w = int(g[WIDTH])
    xlo, xhi, cx, sx = antialias_window(ox, g[X0], g[SCALE_X], g[OFFSET_X], w)
    # Tap distances in float32 from a float64 centre computed once: keeps the loop off float64 units.
    dx0 = np.float32(xlo - cx + 0.5)
    isx = np.float32(sx)
    row = int(g[START]) + (int(g[ROW_LO]) + r) * w * 3
    r0 = r1 = r2 = total = np.float32(0.0)
    for x in range(xlo, xhi):
        wx = triangle_weight(dx0 + np.float32(x - xlo), isx)
        p = row + x * 3
        r0 += wx * np.float32(src[p])
        r1 += wx * np.float32(src[p + 1])
        r2 += wx * np.float32(src[p + 2])
        total += wx
    inv = np.float32(1.0) / total
    t = int(g[ROWS_START]) + (r * out_w + ox) * 3
    rows[t] = r0 * inv
    rows[t + 1] = r1 * inv
    rows[t + 2] = r2 * inv


@register_jitable
def filter_column_pixel(rows: Rows, params: Params, norm: Norm, swap_rb: bool, out: Output, n: int, oy: int,
                        ox: int) -> None:
    """Vertical pass: output pixel (oy, ox) of image n from the horizontally filtered rows (or padding)."""
    g = params[n]
    if padded(g, norm, out, n, oy, ox):
        return
    out_w = out.shape[3]
    ylo, yhi, cy, sy = antialias_window(oy, g[Y0], g[SCALE_Y], g[OFFSET_Y], int(g[HEIGHT]))
    dy0 = np.float32(ylo - cy + 0.5)
    isy = np.float32(sy)
    first = int(g[ROWS_START]) + ox * 3 - int(g[ROW_LO]) * out_w * 3
    a0 = a1 = a2 = total = np.float32(0.0)
    for y in range(ylo, yhi):
        wy = triangle_weight(dy0 + np.float32(y - ylo), isy)
        t = first + y * out_w * 3
        a0 += wy * rows[t]
        a1 += wy * rows[t + 1]
        a2 += wy * rows[t + 2]
        total += wy
    inv = np.float32(1.0) / total
    store_pixel(out, n, oy, ox, a0 * inv, a1 * inv, a2 * inv, norm, swap_rb)
