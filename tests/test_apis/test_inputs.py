"""Inferencer inputs (mmeomt.apis.inputs): arrays take the form OpenCV gives files of the same
kind, anything that is no image fails with its index and what was expected, and unreadable
files are named or, when asked, left out.

``prepare_inputs`` is meant to run on an ``EoMTInferencer`` call's inputs before its pipeline;
the last test runs the inferencer on what it returns for inputs that the host inferencers
cannot take as they are (a 2-D array ends in an IndexError inside mmengine).
"""
import cv2
import numpy as np
import pytest

from mmeomt.apis import EoMTInferencer
from mmeomt.apis.inputs import as_bgr_image, prepare_inputs
from mmeomt.datasets import UnreadableImageError

from apis_helpers import CONFIGS

RNG = np.random.default_rng(0)


@pytest.mark.parametrize('shape, dtype', [((20, 30), np.uint8), ((20, 30, 1), np.uint8),
                                          ((20, 30, 3), np.uint8), ((20, 30, 4), np.uint8),
                                          ((20, 30), np.uint16), ((20, 30, 3), np.uint16),
                                          ((8, 8, 3), np.uint8), ((20, 2000), np.uint8)])
def test_arrays_become_what_opencv_makes_of_the_same_file(tmp_path, shape, dtype):
    array = RNG.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)
    cv2.imwrite(str(tmp_path / 'x.png'), array)
    expected = cv2.imread(str(tmp_path / 'x.png'), cv2.IMREAD_COLOR)
    converted = as_bgr_image(array)
    assert converted.dtype == np.uint8 and converted.shape == shape[:2] + (3, )
    assert np.array_equal(converted, expected)


@pytest.mark.parametrize('value, error, words', [
    (np.zeros((20, 30, 3), np.float32), TypeError, 'got an array of dtype float32 and shape '
     '(20, 30, 3) (floats: scale to 0-255'),
    (np.zeros((20, 30, 3), bool), TypeError, 'got an array of dtype bool'),
    (np.zeros((20, 30), np.int32), TypeError, 'got an array of dtype int32'),
    (np.zeros((3, 20, 30), np.uint8), ValueError, 'got shape (3, 20, 30) (channels first?'),
    (np.zeros((20, 30, 2), np.uint8), ValueError, 'got shape (20, 30, 2)'),
    (np.zeros((2, 20, 30, 3), np.uint8), ValueError, 'got shape (2, 20, 30, 3)'),
    (np.zeros((0, 30, 3), np.uint8), ValueError, 'an empty image'),
    ([[1, 2], [3, 4]], TypeError, 'got list'),
])
def test_what_is_no_image_is_refused_with_its_index(value, error, words):
    with pytest.raises(error) as caught:
        prepare_inputs(['unused.png', value][1:])
    message = str(caught.value)
    assert message.startswith('input 0: expected an (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) '
                              'uint8 or uint16 image')
    assert words in message


def test_unreadable_files_are_named_or_skipped(tmp_path):
    good = tmp_path / 'good.png'
    cv2.imwrite(str(good), RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    truncated = tmp_path / 'truncated.png'
    truncated.write_bytes(good.read_bytes()[:60])
    missing = tmp_path / 'missing.jpg'
    inputs = [str(good), str(truncated), np.zeros((4, 4), np.uint8), str(missing)]
    with pytest.raises(UnreadableImageError) as caught:
        prepare_inputs(inputs)
    assert caught.value.path == str(truncated)
    assert 'input 1' in str(caught.value) and 'skip_bad_images=True' in str(caught.value)

    kept, skipped = prepare_inputs(inputs, skip_bad_images=True)
    assert kept[0] == str(good) and kept[1].shape == (4, 4, 3) and len(kept) == 2
    assert [(s['index'], s['input']) for s in skipped] == [(1, str(truncated)),
                                                          (3, str(missing))]
    assert 'cannot be decoded' in skipped[0]['reason'] and skipped[1]['reason'] == 'no such file'


def test_the_inferencer_runs_on_prepared_arrays(tmp_path):
    inferencer = EoMTInferencer(str(CONFIGS / 'eomt_tiny_panoptic.py'), device='cpu')
    grey = RNG.integers(0, 256, (40, 50), dtype=np.uint8)
    deep = RNG.integers(0, 65536, (30, 20, 4), dtype=np.uint16)
    kept, _ = prepare_inputs([grey, deep])
    result = inferencer(kept)
    shapes = [tuple(p.pred_panoptic_seg.sem_seg.shape[-2:]) for p in result['predictions']]
    assert shapes == [(40, 50), (30, 20)]
