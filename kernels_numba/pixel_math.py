"""The per-output-pixel math, written once and compiled for both the CPU (njit) and CUDA kernels."""
from numba.extending import register_jitable


@register_jitable
def source_coordinate(o, window_start, scale, offset, size):
    """Clamped source coordinate of output index ``o`` (half-pixel centres) and its two taps and weight."""
    s = (o - window_start + 0.5) * scale + offset - 0.5
    if s < 0.0:
        s = 0.0
    if s > size - 1.0:
        s = size - 1.0
    i0 = int(s)  # s >= 0, so truncation is floor
    i1 = i0 + 1 if i0 + 1 < size else size - 1
    return i0, i1, s - i0


@register_jitable
def write_output_pixel(src, offsets, sizes, geometry, norm, pad, swap_rb, out, n, oy, ox):
    """Write the 3 normalised channels of output pixel (oy, ox) of image n (bilinear, no antialias)."""
    g = geometry[n]
    if oy < g[4] or oy >= g[5] or ox < g[6] or ox >= g[7]:
        for c in range(3):
            out[n, c, oy, ox] = pad[c]
        return
    h = sizes[n, 0]
    w = sizes[n, 1]
    y0, y1, fy = source_coordinate(oy, g[4], g[0], g[2], h)
    x0, x1, fx = source_coordinate(ox, g[6], g[1], g[3], w)
    wy = fy
    wx = fx
    row0 = offsets[n] + y0 * w * 3
    row1 = offsets[n] + y1 * w * 3
    for c in range(3):
        ci = 2 - c if swap_rb else c
        v00 = float(src[row0 + x0 * 3 + ci])
        v01 = float(src[row0 + x1 * 3 + ci])
        v10 = float(src[row1 + x0 * 3 + ci])
        v11 = float(src[row1 + x1 * 3 + ci])
        top = v00 + (v01 - v00) * wx
        bottom = v10 + (v11 - v10) * wx
        value = top + (bottom - top) * wy
        out[n, c, oy, ox] = value * norm[0, c] + norm[1, c]
