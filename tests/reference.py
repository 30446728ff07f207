"""A slow, literal transcription of the C++ reference, for testing the vectorised kernels.

Everything here is scalar Python with its own RNG code (one raw draw at a time, rejection
loops as written in libstdc++), one point and one partition at a time, following
``fixed_dimensional_encoding.cc`` line by line. Only glibc's ``logf`` constants are shared
with the library.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from muvera.fde.config import FDEConfig
from muvera.fde.rng import _LN2, _LOGF_INVC, _LOGF_LOGC, _LOGF_POLY


def _f32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


class ScalarMT19937:
    def __init__(self, seed: int) -> None:
        self.mt = [0] * 624
        self.mt[0] = seed & 0xFFFFFFFF
        for i in range(1, 624):
            prev = self.mt[i - 1]
            self.mt[i] = (1812433253 * (prev ^ (prev >> 30)) + i) & 0xFFFFFFFF
        self.index = 624

    def __call__(self) -> int:
        if self.index >= 624:
            for i in range(624):
                y = (self.mt[i] & 0x80000000) | (self.mt[(i + 1) % 624] & 0x7FFFFFFF)
                self.mt[i] = self.mt[(i + 397) % 624] ^ (y >> 1) ^ (0x9908B0DF if y & 1 else 0)
            self.index = 0
        y = self.mt[self.index]
        self.index += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C5680
        y ^= (y << 15) & 0xEFC60000
        y ^= y >> 18
        return y & 0xFFFFFFFF


def scalar_logf(x: float) -> float:
    ix = struct.unpack("I", struct.pack("f", x))[0]
    if ix == 0x3F800000:
        return 0.0
    tmp = (ix - 0x3F330000) & 0xFFFFFFFF
    i = (tmp >> 19) % 16
    k = (tmp - (1 << 32) if tmp >= 0x80000000 else tmp) >> 23
    iz = (ix - (tmp & 0xFF800000)) & 0xFFFFFFFF
    z = struct.unpack("f", struct.pack("I", iz))[0]
    r = z * float(_LOGF_INVC[i]) - 1.0
    y0 = float(_LOGF_LOGC[i]) + k * _LN2
    r2 = r * r
    y = _LOGF_POLY[1] * r + _LOGF_POLY[2]
    y = _LOGF_POLY[0] * r2 + y
    y = y * r2 + (y0 + r)
    return _f32(y)


class ScalarNormal:
    """libstdc++ normal_distribution<float>(0, 1), one value per call."""

    def __init__(self) -> None:
        self.saved: float | None = None

    def __call__(self, gen: ScalarMT19937) -> float:
        if self.saved is not None:
            value, self.saved = self.saved, None
            return value
        while True:
            u1 = min(_f32(_f32(float(gen())) / 4294967296.0), _f32(1.0 - 2.0**-24))
            x = _f32(_f32(2.0 * u1) - 1.0)
            u2 = min(_f32(_f32(float(gen())) / 4294967296.0), _f32(1.0 - 2.0**-24))
            y = _f32(_f32(2.0 * u2) - 1.0)
            r2 = _f32(_f32(x * x) + _f32(y * y))
            if r2 <= 1.0 and r2 != 0.0:
                break
        mult = _f32(math.sqrt(_f32(_f32(-2.0 * scalar_logf(r2)) / r2)))
        self.saved = _f32(x * mult)
        return _f32(y * mult)


def scalar_uniform_int(gen: ScalarMT19937, bound: int) -> int:
    """uniform_int_distribution(0, bound - 1) with libstdc++'s 32-bit Lemire method."""
    product = gen() * bound
    low = product & 0xFFFFFFFF
    if low < bound:
        threshold = ((1 << 32) - bound) % bound
        while low < threshold:
            product = gen() * bound
            low = product & 0xFFFFFFFF
    return product >> 32


def scalar_bernoulli_half(gen: ScalarMT19937) -> bool:
    total = float(gen()) + float(gen()) * 4294967296.0
    canon = total / 18446744073709551616.0
    if canon >= 1.0:
        canon = math.nextafter(1.0, 0.0)
    return canon < 0.5


def simhash_matrix(seed: int, d: int, k: int) -> np.ndarray:
    gen, dist = ScalarMT19937(seed), ScalarNormal()
    out = np.zeros((d, k), dtype=np.float32)
    for col in range(k):
        for row in range(d):
            out[row, col] = dist(gen)
    return out


def ams_matrix(seed: int, d: int, p: int) -> np.ndarray:
    gen = ScalarMT19937(seed)
    out = np.zeros((d, p), dtype=np.float32)
    for i in range(d):
        index = scalar_uniform_int(gen, p)
        out[i, index] = 1.0 if scalar_bernoulli_half(gen) else -1.0
    return out


def count_sketch(vector: np.ndarray, final_dimension: int, seed: int) -> np.ndarray:
    gen = ScalarMT19937(seed)
    out = np.zeros(final_dimension, dtype=np.float32)
    for value in vector:
        index = scalar_uniform_int(gen, final_dimension)
        sign = 1.0 if scalar_bernoulli_half(gen) else -1.0
        out[index] += np.float32(sign * value)
    return out


def _partition_index(sketch_row: np.ndarray) -> int:
    g = 0
    for value in sketch_row:
        bit = 1 if value > 0 else 0
        g = (g << 1) + (bit ^ (g & 1))
    return g


def _distance_to_partition(sketch_row: np.ndarray, index: int) -> int:
    binary = index ^ (index >> 1)
    distance = 0
    for i in range(len(sketch_row) - 1, -1, -1):
        bit = 1 if sketch_row[i] > 0 else 0
        distance += bit != (binary & 1)
        binary >>= 1
    return distance


def reference_fde(points: np.ndarray, config: FDEConfig, document: bool) -> np.ndarray:
    """FDE of one point cloud ``(n, d)``, transcribed from the C++; zero for no points."""
    d, R, k = config.dimension, config.num_repetitions, config.num_simhash_projections
    p, B = config.block_dimension, config.num_partitions
    points = np.asarray(points, dtype=np.float32).reshape(-1, d)
    n = points.shape[0]
    out = np.zeros(R * B * p, dtype=np.float32)
    for r in range(R):
        seed = (config.seed + r) & 0xFFFFFFFF
        sketch = points @ simhash_matrix(seed, d, k) if k > 0 else None
        if config.projection_type == "identity":
            projected = points
        else:
            projected = points @ ams_matrix(seed, d, p)
        sizes = [0] * B
        for t in range(n):
            g = _partition_index(sketch[t]) if sketch is not None else 0
            base = r * B * p + g * p
            out[base : base + p] += projected[t]
            sizes[g] += 1
        if not document:
            continue
        for g in range(B):
            base = r * B * p + g * p
            if sizes[g] == 0:
                if config.fill_empty_partitions and k > 0 and n > 0:
                    best, best_distance = -1, None
                    for t in range(n):
                        distance = _distance_to_partition(sketch[t], g)
                        if best_distance is None or distance < best_distance:
                            best, best_distance = t, distance
                    out[base : base + p] = projected[best]
                continue
            out[base : base + p] /= sizes[g]
    if config.final_projection_dimension is not None:
        return count_sketch(out, config.final_projection_dimension, config.seed)
    return out


def reference_maxsim(query: np.ndarray, document: np.ndarray) -> float:
    if len(query) == 0:
        return 0.0
    if len(document) == 0:
        return float("-inf")
    total = 0.0
    for q in query:
        total += max(float(np.dot(q, t)) for t in document)
    return total
