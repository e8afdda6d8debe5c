"""mmseg's ``SegDataPreProcessor`` with test batches of images of different sizes."""
from typing import Any, Dict

import torch.nn.functional as F
from mmseg.models.data_preprocessor import SegDataPreProcessor

from mmeomt.registry import MODELS


@MODELS.register_module()
class EoMTSegDataPreProcessor(SegDataPreProcessor):
    """``SegDataPreProcessor`` that also batches test images of different sizes.

    EoMT's semantic test pipeline resizes the short side to the crop, so the long sides of a
    validation batch differ, and mmseg's pre-processor refuses such a batch at test time.  Here
    the images of a test batch are padded bottom/right to the largest one (with ``pad_val``,
    before normalisation) and the padding is recorded in each sample's ``img_padding_size``
    (``[left, right, top, bottom]``, added to any padding of ``test_cfg``), which
    :class:`EoMTSegmentor`'s windows and mmseg's ``postprocess_result`` leave out: window
    inference gives every image the predictions it gets alone.  Training and same-size batches
    are mmseg's.
    """

    def forward(self, data: dict, training: bool = False) -> Dict[str, Any]:
        inputs = data['inputs']
        sizes = [tuple(image.shape[-2:]) for image in inputs]
        if training or len(set(sizes)) <= 1:
            return super().forward(data, training)
        data_samples = data.get('data_samples')
        if data_samples is None:
            raise ValueError('EoMTSegDataPreProcessor: a test batch of images of different sizes '
                             f'({sorted(set(sizes))}) needs data_samples to record the padding')
        H, W = max(h for h, _ in sizes), max(w for _, w in sizes)
        padded = [F.pad(image, (0, W - w, 0, H - h), value=self.pad_val)
                  for image, (h, w) in zip(inputs, sizes)]
        out = super().forward(dict(data, inputs=padded), training)
        for sample, (h, w) in zip(out['data_samples'], sizes):
            left, right, top, bottom = sample.metainfo.get(
                'img_padding_size', sample.metainfo.get('padding_size', [0] * 4))
            sample.set_metainfo(dict(img_padding_size=[left, right + W - w, top, bottom + H - h],
                                     pad_shape=tuple(out['inputs'].shape[-2:])))
        return out
