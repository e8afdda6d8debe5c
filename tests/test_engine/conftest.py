"""A tiny EoMT inside a minimal mmengine ``BaseModel``, shared by the engine tests."""
import pytest
import torch
from mmengine.model import BaseModel
from torch.utils.data import Dataset

from mmeomt.registry import MODELS

# 3 ViT blocks, the last 2 see the queries; 32x32 inputs give a 2x2 patch grid.
NUM_LAYERS = 3
NUM_BLOCKS = 2


class TinyEoMTModel(BaseModel):
    """``mode='loss'`` returns a scalar that touches every parameter of the core."""

    def __init__(self, num_blocks: int = NUM_BLOCKS):
        super().__init__()
        self.eomt = MODELS.build(dict(
            type='mmeomt.EoMT',
            backbone=dict(
                type='mmeomt.EoMTViT',
                arch=dict(embed_dims=32, num_layers=NUM_LAYERS, num_heads=2,
                          feedforward_channels=64),
                img_size=32,
                patch_size=16),
            num_classes=2,
            num_queries=3,
            num_blocks=num_blocks))

    def forward(self, inputs, data_samples=None, mode='tensor'):
        mask_logits, class_logits = self.eomt(inputs)
        if mode == 'loss':
            loss = sum(m.float().square().mean() for m in mask_logits)
            loss = loss + sum(c.float().square().mean() for c in class_logits)
            return dict(loss=loss)
        return mask_logits[-1]


class RandomImages(Dataset):

    def __init__(self, length: int = 4):
        self.length = length

    def __len__(self):
        return self.length

    def __getitem__(self, idx):
        generator = torch.Generator().manual_seed(idx)
        return dict(inputs=torch.rand(3, 32, 32, generator=generator))


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return TinyEoMTModel()


@pytest.fixture
def images():
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def make_tiny_model():
    """Factory: ``make_tiny_model(num_blocks=2)`` -> a fresh, seeded :class:`TinyEoMTModel`."""

    def make(num_blocks: int = NUM_BLOCKS, seed: int = 0):
        torch.manual_seed(seed)
        return TinyEoMTModel(num_blocks)

    return make


@pytest.fixture
def random_images():
    """Factory: ``random_images(length)`` -> a dataset of ``dict(inputs=(3, 32, 32))``."""
    return RandomImages
