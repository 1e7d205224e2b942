"""Images for the augmentation tests: real ones that ship with scikit-learn, small and fast."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits, load_sample_images


@pytest.fixture(scope="session")
def rgb() -> torch.Tensor:
    """Four 32 x 32 RGB crops of scikit-learn's two sample photos, float in [0, 1]."""
    photos = np.stack(load_sample_images().images)
    photos = torch.from_numpy(photos).permute(0, 3, 1, 2).float() / 255
    small = F.interpolate(photos, size=(64, 96), mode="bilinear", antialias=True)
    crops = [small[:, :, 8:40, 16:48], small[:, :, 24:56, 48:80]]
    return torch.cat(crops).clamp(0, 1).contiguous()


@pytest.fixture(scope="session")
def gray() -> torch.Tensor:
    """Four digits upsampled to 24 x 24 (576 pixels, so equalize has a histogram to work on)."""
    digits = torch.tensor(load_digits().images[:4]).float().unsqueeze(1) / 16
    return F.interpolate(digits, size=(24, 24), mode="bilinear").clamp(0, 1)


@pytest.fixture(params=["gray", "rgb"])
def images(request) -> torch.Tensor:
    """Each test that takes ``images`` runs on 1-channel and on 3-channel batches."""
    return request.getfixturevalue(request.param)
