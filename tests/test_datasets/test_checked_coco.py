"""mmeomt's COCO instance and panoptic datasets lose no data silently.

What mmdet's classes do with the same files is the baseline each test departs from: they drop
annotations of unknown categories without a word (instance), raise a bare ``KeyError``
(panoptic), end in ``need at least one array to concatenate`` for a file without annotations,
and crash in OpenCV without a file name on a truncated segment PNG.
"""
import json
import shutil

import numpy as np
import pytest
from mmengine.registry import init_default_scope

from mmeomt.datasets import coco as coco_module
from mmeomt.datasets import (LoadPanopticAnnotations, SyntheticInstanceDataset,
                             SyntheticPanopticDataset, UnreadableImageError)
from mmeomt.datasets.synthetic import CATEGORY_IDS, generate_synthetic_dataset

INSTANCES = 'annotations/instances_train2017.json'
PANOPTIC = 'annotations/panoptic_train2017.json'


@pytest.fixture(scope='module')
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp('checked') / 'data'
    generate_synthetic_dataset(str(root), num_train=6, num_val=1, seed=0)
    return root / 'coco'


@pytest.fixture
def coco(pristine, tmp_path):
    """A copy of the synthetic COCO folder the test may break."""
    init_default_scope('mmdet')
    return shutil.copytree(pristine, tmp_path / 'coco')


@pytest.fixture
def logged(monkeypatch):
    messages = []
    monkeypatch.setattr(coco_module, 'print_log',
                        lambda msg, **kwargs: messages.append((kwargs.get('level'), msg)))
    return messages


def edit(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return data


def instances(root, **kwargs):
    kwargs.setdefault('filter_cfg', dict(filter_empty_gt=True))
    return SyntheticInstanceDataset(data_root=str(root), ann_file=INSTANCES,
                                    data_prefix=dict(img='train2017/'), pipeline=[], **kwargs)


def panoptic(root, pipeline=(), **kwargs):
    return SyntheticPanopticDataset(
        data_root=str(root), ann_file=PANOPTIC, pipeline=list(pipeline),
        data_prefix=dict(img='train2017/', seg='annotations/panoptic_train2017/'), **kwargs)


LOAD_PANOPTIC = [dict(type='LoadImageFromFile'),
                 dict(type='mmeomt.LoadPanopticAnnotations')]


def test_unchanged_data_and_one_summary(coco, logged):
    dataset = instances(coco)
    assert len(dataset) == 6
    (level, message), = logged
    assert message.startswith(f'SyntheticInstanceDataset ({coco / INSTANCES}): kept 6 of 6 '
                              'images and ')
    assert message.endswith('annotations; dropped: nothing')


def test_instance_annotation_of_an_unknown_category(coco, logged):
    data = edit(coco / INSTANCES, lambda d: d['annotations'][3].update(category_id=99))
    ann, image = data['annotations'][3], data['annotations'][3]['image_id']
    with pytest.raises(ValueError) as error:
        instances(coco)
    message = str(error.value)
    assert f'annotation {ann["id"]} of image {image}' in message
    assert str(coco / INSTANCES) in message and 'category_id 99' in message
    assert "on_bad_data='skip'" in message

    total = len(data['annotations'])
    dataset = instances(coco, on_bad_data='skip')
    assert sum(len(dataset.get_data_info(i)['instances']) for i in range(len(dataset))) == (
        total - 1)
    summary, warning = logged[-2:]
    assert (f'kept 6 of 6 images and {total - 1} of {total} annotations; dropped: 1 '
            'annotations: category not in classes') in summary[1]
    assert warning[0] == 30 and "dropped 1 bad items" in warning[1]


def test_categories_must_name_the_classes_in_their_order(coco):
    edit(coco / INSTANCES, lambda d: d['categories'][1].update(name='rectangle'))
    with pytest.raises(ValueError, match=r"the classes \['square'\] have no category"):
        instances(coco)
    edit(coco / INSTANCES, lambda d: d['categories'][1].update(name='square'))
    edit(coco / INSTANCES, lambda d: d['categories'].reverse())
    with pytest.raises(ValueError, match='come in the order'):
        instances(coco)


def test_panoptic_segment_of_an_unknown_category(coco, logged):
    data = edit(coco / PANOPTIC,
                lambda d: d['annotations'][0]['segments_info'][0].update(category_id=99))
    entry = data['annotations'][0]
    segment = entry['segments_info'][0]
    with pytest.raises(ValueError) as error:  # mmdet: KeyError: 99
        panoptic(coco)
    assert f'segment {segment["id"]} of image {entry["image_id"]}' in str(error.value)

    dataset = panoptic(coco, pipeline=LOAD_PANOPTIC, on_bad_data='skip', test_mode=True)
    index = [dataset.get_data_info(i)['img_id'] for i in range(len(dataset))].index(
        entry['image_id'])
    assert dataset.get_data_info(index)['ignored_segment_ids'] == [segment['id']]
    # Its pixels are void, as mmdet makes pixels of segments it does not load; no error about
    # a PNG colour without an entry.
    sample = dataset[index]
    assert 'segments: category not in classes' in logged[-2][1]
    assert sample['gt_seg_map'].shape == (entry_height(data, entry), entry_width(data, entry))


def entry_height(data, entry):
    return next(i['height'] for i in data['images'] if i['id'] == entry['image_id'])


def entry_width(data, entry):
    return next(i['width'] for i in data['images'] if i['id'] == entry['image_id'])


def test_png_colour_without_a_json_entry(coco):
    data = edit(coco / PANOPTIC, lambda d: d['annotations'][0]['segments_info'].pop(1))
    entry = data['annotations'][0]
    dataset = panoptic(coco, pipeline=LOAD_PANOPTIC, test_mode=True)
    index = [dataset.get_data_info(i)['img_id'] for i in range(len(dataset))].index(
        entry['image_id'])
    with pytest.raises(ValueError) as error:
        dataset[index]
    message = str(error.value)
    assert f'segment PNG {coco}/annotations/panoptic_train2017/{entry["file_name"]}' in message
    assert f'of image {entry["image_id"]} holds segment ids without an entry' in message

    transform = LoadPanopticAnnotations(on_bad_data='skip')
    results = transform(dict(dataset.get_data_info(index), ori_shape=(
        entry_height(data, entry), entry_width(data, entry))))
    known = {s['category'] for s in dataset.get_data_info(index)['segments_info']}
    assert set(np.unique(results['gt_seg_map'])) <= known | {255}


def test_missing_image_file(coco, logged):
    (coco / 'annotations' / 'panoptic_train2017' / '000000000003.png').unlink()
    with pytest.raises(ValueError, match=r'segmentation map .*000000000003\.png of image 3 '
                       r'\(listed in .*panoptic_train2017\.json\) does not exist'):
        panoptic(coco)
    (coco / 'train2017' / '000000000002.jpg').unlink()
    with pytest.raises(ValueError, match=r'image .*train2017/000000000002\.jpg of image 2 '
                       r'\(listed in .*instances_train2017\.json\) does not exist'):
        instances(coco)
    assert len(instances(coco, on_bad_data='skip')) == 5
    assert 'kept 5 of 6 images' in logged[-2][1] and '1 images: missing file' in logged[-2][1]
    assert len(panoptic(coco, on_bad_data='skip')) == 4


@pytest.mark.parametrize('kind', ['instance', 'panoptic'])
def test_annotation_file_without_annotations(coco, kind):
    path = coco / (INSTANCES if kind == 'instance' else PANOPTIC)
    if kind == 'instance':
        edit(path, lambda d: d.update(annotations=[]))
    else:
        edit(path, lambda d: [a.update(segments_info=[]) for a in d['annotations']])
    build = instances if kind == 'instance' else panoptic
    with pytest.raises(ValueError, match=f'{path} lists 6 images but no annotations'):
        build(coco)  # mmdet: need at least one array to concatenate
    assert len(build(coco, test_mode=True)) == 6  # an image list to predict on is fine
    path.write_text('')
    with pytest.raises(ValueError, match=f'{path} is not a JSON file'):
        build(coco)


def test_nothing_left_after_filtering_says_why(coco):
    edit(coco / INSTANCES, lambda d: [a.update(category_id=CATEGORY_IDS[-1])
                                      for a in d['annotations']])  # a stuff id: no class here
    with pytest.raises(ValueError, match=r'no image of .* is left: 6 images: no annotation of '
                       r'the classes \(filter_empty_gt\); \d+ annotations: category not in'):
        instances(coco, on_bad_data='skip')


def test_images_without_annotations_are_still_filtered(coco, logged):
    edit(coco / INSTANCES, lambda d: d.update(
        annotations=[a for a in d['annotations'] if a['image_id'] != 4]))
    assert len(instances(coco)) == 5
    assert '1 images: no annotation of the classes (filter_empty_gt)' in logged[-1][1]
    assert len(instances(coco, filter_cfg=None)) == 6


def test_truncated_segment_png_at_test_time_is_named(coco):
    png = coco / 'annotations' / 'panoptic_train2017' / '000000000001.png'
    png.write_bytes(png.read_bytes()[:200])
    dataset = panoptic(coco, pipeline=LOAD_PANOPTIC, test_mode=True)
    with pytest.raises(UnreadableImageError) as error:  # mmdet: cv2.error in cvtColor
        dataset[0]
    assert error.value.path == str(png)
    assert str(error.value).startswith(f'segment PNG {png}: cannot be decoded')


def test_truncated_image_in_training_is_named(coco):
    image = coco / 'train2017' / '000000000001.jpg'
    image.write_bytes(image.read_bytes()[:300])
    dataset = panoptic(coco, pipeline=LOAD_PANOPTIC)
    with pytest.raises(UnreadableImageError, match=f'image {image}: cannot be decoded'):
        dataset[0]
