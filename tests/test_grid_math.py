"""kernels/grid_math.py: the host's cdiv and next_power_of_2 equal Triton's."""
import triton

from tritattn.kernels.grid_math import cdiv, next_power_of_2


def test_next_power_of_2_equals_tritons():
    for n in [*range(-3, 4100), 2**20 - 1, 2**20, 2**20 + 1, 2**31 - 1, 2**31]:
        assert next_power_of_2(n) == triton.next_power_of_2(n), n


def test_cdiv_equals_tritons():
    for a in range(0, 300):
        for b in (1, 2, 3, 7, 64, 255, 256, 1024):
            assert cdiv(a, b) == triton.cdiv(a, b), (a, b)
