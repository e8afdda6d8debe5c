from .synthetic import generate_synthetic_dataset
from .synthetic_datasets import (SyntheticInstanceDataset, SyntheticPanopticDataset,
                                 SyntheticSemanticDataset)

__all__ = ['generate_synthetic_dataset', 'SyntheticPanopticDataset', 'SyntheticInstanceDataset',
           'SyntheticSemanticDataset']
