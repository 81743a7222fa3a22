"""The shared DFT grids and centred padding (cryoscore.fourier) against numpy's and torch's own conventions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryoscore.fourier import frequency_axes, pad_or_crop_centred, radial_frequency


@pytest.mark.parametrize("shape", [(6, 9), (7, 8), (4, 5, 6)])
@pytest.mark.parametrize("rfft", [True, False])
def test_frequency_axes_are_the_frequencies_of_the_transforms_own_grid(shape, rfft):
    """A plane wave of integer frequency f along an axis puts its DFT peak where that axis's frequency is f / n."""
    spectrum_shape = np.fft.rfftn(np.zeros(shape)).shape if rfft else shape
    axes = frequency_axes(shape, 0.5, rfft=rfft)
    assert np.broadcast_shapes(*(axis.shape for axis in axes)) == spectrum_shape
    for index, size in enumerate(shape):
        cycles = 2  # whole periods across the axis
        positions = np.indices(shape)[index]
        wave = np.cos(2 * np.pi * cycles * positions / size)
        spectrum = np.abs(np.fft.rfftn(wave) if rfft else np.fft.fftn(wave))
        peak = np.unravel_index(np.argmax(spectrum), spectrum.shape)
        frequency = np.broadcast_to(axes[index], spectrum_shape)[peak]
        assert abs(frequency) == pytest.approx(cycles / (size * 0.5))  # cycles per spacing unit
        for other in set(range(len(shape))) - {index}:
            assert np.broadcast_to(axes[other], spectrum_shape)[peak] == 0


def test_torch_and_numpy_grids_agree_and_keep_the_dtype_asked_for():
    numpy_k = radial_frequency((10, 12), 1.85)
    torch_k = radial_frequency((10, 12), 1.85, backend="torch", dtype=torch.float64)
    assert numpy_k.shape == (10, 7) and torch_k.dtype == torch.float64
    np.testing.assert_allclose(torch_k.numpy(), numpy_k, rtol=1e-12)
    assert radial_frequency((10, 12), backend="torch").dtype == torch.get_default_dtype()
    # Nyquist along the rows (1 / (2 * 1.85) per A) and the corner of the rfft grid.
    assert numpy_k[5, 0] == pytest.approx(1 / 3.7) and numpy_k[5, 6] == pytest.approx(np.sqrt(2) / 3.7)


@pytest.mark.parametrize("size_in, size_out", [(5, 8), (6, 9), (8, 5), (9, 4), (6, 6)])
def test_padding_and_cropping_keep_the_centre_element_at_the_centre(size_in, size_out):
    cube = np.zeros((size_in,) * 3, dtype=np.float32)
    cube[(size_in // 2,) * 3] = 1.0
    resized = pad_or_crop_centred(cube, size_out)
    assert resized.shape == (size_out,) * 3 and resized.dtype == np.float32
    assert resized[(size_out // 2,) * 3] == 1.0 and resized.sum() == 1.0
    assert not np.shares_memory(resized, cube)


def test_padding_then_cropping_gives_the_array_back_and_pads_each_axis_to_the_size():
    rng = np.random.default_rng(0)
    block = rng.standard_normal((3, 6, 5))
    cube = pad_or_crop_centred(block, 8)
    assert cube.shape == (8, 8, 8)
    assert np.abs(cube).sum() == pytest.approx(np.abs(block).sum())
    cube5 = rng.standard_normal((5, 5, 5))
    np.testing.assert_array_equal(pad_or_crop_centred(pad_or_crop_centred(cube5, 8), 5), cube5)
