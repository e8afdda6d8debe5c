"""The synthetic shapes dataset: deterministic, valid in all three formats, read by the real
mmdet/mmseg datasets and pipelines, and generated only once per set of parameters."""
import json
import os
import os.path as osp
import sys

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from mmeomt.datasets import synthetic
from mmeomt.datasets.synthetic import (CLASSES, STUFF_CLASSES, THING_CLASSES,
                                       generate_synthetic_dataset)
from mmeomt.utils.panopticapi_compat import rgb2id

NUM_TRAIN, NUM_VAL = 11, 3  # seed 0 puts a crowd in train image 10, so the crowd path is tested


def read_tree(root: str) -> dict:
    """Relative path -> bytes of every file under ``root``."""
    files = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = osp.join(dirpath, name)
            with open(path, 'rb') as f:
                files[osp.relpath(path, root)] = f.read()
    return files


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('synthetic') / 'data')
    generate_synthetic_dataset(root, num_train=NUM_TRAIN, num_val=NUM_VAL, seed=0)
    return root


# ------------------------------------------------------------------------------ determinism


def test_same_seed_gives_identical_bytes_and_another_seed_differs(data_root, tmp_path):
    again = str(tmp_path / 'again')
    generate_synthetic_dataset(again, num_train=NUM_TRAIN, num_val=NUM_VAL, seed=0)
    first, second = read_tree(data_root), read_tree(again)
    assert sorted(first) == sorted(second)
    assert all(first[k] == second[k] for k in first)

    other = str(tmp_path / 'other')
    generate_synthetic_dataset(other, num_train=2, num_val=1, seed=1)
    third = read_tree(other)
    for name in ('coco/train2017/000000000001.jpg',
                 'coco/annotations/panoptic_train2017/000000000001.png'):
        assert third[name] != first[name]


def test_each_image_depends_only_on_seed_split_and_index(data_root, tmp_path):
    # Growing a split keeps its first images: no image depends on the split sizes.
    small = str(tmp_path / 'small')
    generate_synthetic_dataset(small, num_train=4, num_val=1, seed=0)
    full = read_tree(data_root)
    for name, data in read_tree(small).items():
        if name.endswith(('.jpg', '.png')):
            assert full[name] == data, name


# ------------------------------------------------------------------------------ formats


def test_layout_and_manifest(data_root):
    with open(osp.join(data_root, 'manifest.json')) as f:
        manifest = json.load(f)
    assert manifest['params'] == dict(num_train=NUM_TRAIN, num_val=NUM_VAL, seed=0)
    assert manifest['version'] == synthetic.GENERATOR_VERSION
    for split, n, coco_dir, ade_dir in (('train', NUM_TRAIN, 'train2017', 'training'),
                                        ('val', NUM_VAL, 'val2017', 'validation')):
        assert manifest['stats'][split]['images'] == n
        images = sorted(os.listdir(osp.join(data_root, 'coco', coco_dir)))
        stems = [osp.splitext(name)[0] for name in images]
        assert len(images) == n and all(name.endswith('.jpg') for name in images)
        assert sorted(os.listdir(osp.join(data_root, 'ade/images', ade_dir))) == images
        for folder in (f'coco/annotations/panoptic_{coco_dir}', f'ade/annotations/{ade_dir}'):
            assert sorted(os.listdir(osp.join(data_root, folder))) == [s + '.png' for s in stems]


@pytest.mark.parametrize('split', ['train2017', 'val2017'])
def test_coco_panoptic_and_instance_files_agree_with_the_pngs(data_root, split):
    ann_dir = osp.join(data_root, 'coco/annotations')
    with open(osp.join(ann_dir, f'panoptic_{split}.json')) as f:
        panoptic = json.load(f)
    cats = {c['id']: c for c in panoptic['categories']}
    assert [c['name'] for c in panoptic['categories']] == list(CLASSES)
    assert [cats[i]['isthing'] for i in sorted(cats)] == [1] * 5 + [0] * 3
    coco = COCO(osp.join(ann_dir, f'instances_{split}.json'))
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(THING_CLASSES)
    images = {img['id']: img for img in panoptic['images']}
    assert images == {i: coco.imgs[i] for i in coco.getImgIds()}

    num_crowd = 0
    for ann in panoptic['annotations']:
        img = images[ann['image_id']]
        h, w = img['height'], img['width']
        assert 160 <= h <= 256 and 160 <= w <= 256
        assert Image.open(osp.join(data_root, 'coco', split, img['file_name'])).size == (w, h)
        png = Image.open(osp.join(ann_dir, f'panoptic_{split}', ann['file_name']))
        ids = rgb2id(np.array(png))
        assert ids.shape == (h, w)
        segs = ann['segments_info']
        assert set(np.unique(ids)) - {0} == {s['id'] for s in segs}
        # Every segment is one category id; the instance file holds exactly the thing segments.
        inst = coco.loadAnns(coco.getAnnIds(imgIds=[img['id']]))
        thing_segs = [s for s in segs if cats[s['category_id']]['isthing']]
        assert len(inst) == len(thing_segs) >= 1
        for seg, inst_ann in zip(thing_segs, inst):
            assert inst_ann['category_id'] == seg['category_id']
            assert inst_ann['iscrowd'] == seg['iscrowd']
            assert np.array_equal(coco.annToMask(inst_ann).astype(bool), ids == seg['id'])
            assert inst_ann['area'] == seg['area'] and inst_ann['bbox'] == seg['bbox']
            assert mask_utils.area(coco.annToRLE(inst_ann)) == seg['area']
            assert list(mask_utils.toBbox(coco.annToRLE(inst_ann))) == seg['bbox']
        for seg in segs:
            mask = ids == seg['id']
            ys, xs = np.nonzero(mask)
            assert seg['area'] == mask.sum() > 0
            assert seg['bbox'] == [xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1]
            assert seg['iscrowd'] in (0, 1)
            # Crowds are groups of things; stuff has one segment per class.
            assert not seg['iscrowd'] or cats[seg['category_id']]['isthing']
            num_crowd += seg['iscrowd']
        stuff_ids = [s['category_id'] for s in segs if not cats[s['category_id']]['isthing']]
        assert len(stuff_ids) == len(set(stuff_ids)) >= 1
    if split == 'train2017':
        assert num_crowd >= 1


@pytest.mark.parametrize('split', ['training', 'validation'])
def test_semantic_maps_label_every_segment_with_its_class(data_root, split):
    coco_split = {'training': 'train2017', 'validation': 'val2017'}[split]
    with open(osp.join(data_root, f'coco/annotations/panoptic_{coco_split}.json')) as f:
        panoptic = json.load(f)
    for ann in panoptic['annotations']:
        sem = np.array(Image.open(osp.join(data_root, 'ade/annotations', split, ann['file_name'])))
        assert sem.dtype == np.uint8 and sem.ndim == 2 and sem.max() <= len(CLASSES)
        ids = rgb2id(np.array(Image.open(
            osp.join(data_root, f'coco/annotations/panoptic_{coco_split}', ann['file_name']))))
        expected = np.zeros_like(sem)  # 0 = unlabelled, as in ADE20K
        for seg in ann['segments_info']:
            expected[ids == seg['id']] = seg['category_id']
        assert np.array_equal(sem, expected)


# ------------------------------------------------------------------------------ real loaders


def test_panoptic_dataset_through_mmdet_pipeline(data_root):
    from mmengine.registry import DATASETS, init_default_scope
    init_default_scope('mmdet')
    dataset = DATASETS.build(dict(
        type='mmeomt.SyntheticPanopticDataset', data_root=osp.join(data_root, 'coco'),
        ann_file='annotations/panoptic_train2017.json',
        data_prefix=dict(img='train2017/', seg='annotations/panoptic_train2017/'),
        pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadPanopticAnnotations'),
                  dict(type='PackDetInputs')]))
    assert len(dataset) == NUM_TRAIN
    assert dataset.metainfo['thing_classes'] == THING_CLASSES
    assert dataset.metainfo['stuff_classes'] == STUFF_CLASSES
    with open(osp.join(data_root, 'coco/annotations/panoptic_train2017.json')) as f:
        anns = json.load(f)['annotations']
    for index in (0, NUM_TRAIN - 1):
        sample = dataset[index]['data_samples']
        segs = anns[index]['segments_info']
        inst = sample.gt_instances
        non_crowd = [s for s in segs if s['category_id'] <= 5 and not s['iscrowd']]
        assert len(inst) == len(non_crowd)
        assert inst.labels.tolist() == [s['category_id'] - 1 for s in non_crowd]
        assert inst.masks.masks.shape[1:] == sample.metainfo['img_shape']
        assert inst.masks.areas.tolist() == [s['area'] for s in non_crowd]
        # Labels: things 0..4, stuff 5..7, void 255 (crowds count as their class here).
        sem = sample.gt_sem_seg.sem_seg[0].numpy()
        assert set(np.unique(sem)) <= set(range(len(CLASSES))) | {255}
        assert {s['category_id'] - 1 for s in segs} == set(np.unique(sem)) - {255}
    # mmdet turns the crowd of image 9 into a non-thing segment: no instance mask, but its
    # pixels keep their class in the semantic map (checked above).
    crowd = [s for s in anns[NUM_TRAIN - 1]['segments_info'] if s['iscrowd']]
    assert len(crowd) == 1
    parsed = {s['id']: s for s in dataset.get_data_info(NUM_TRAIN - 1)['segments_info']}
    assert parsed[crowd[0]['id']]['is_thing'] is False


def test_instance_dataset_through_mmdet_pipeline(data_root):
    from mmengine.registry import DATASETS, init_default_scope
    init_default_scope('mmdet')
    dataset = DATASETS.build(dict(
        type='mmeomt.SyntheticInstanceDataset', data_root=osp.join(data_root, 'coco'),
        ann_file='annotations/instances_val2017.json', data_prefix=dict(img='val2017/'),
        pipeline=[dict(type='LoadImageFromFile'),
                  dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
                  dict(type='PackDetInputs')]))
    assert len(dataset) == NUM_VAL and dataset.metainfo['classes'] == THING_CLASSES
    coco = COCO(osp.join(data_root, 'coco/annotations/instances_val2017.json'))
    sample = dataset[0]['data_samples']
    anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=[sample.img_id])) if not a['iscrowd']]
    masks = sample.gt_instances.masks.masks
    assert sample.gt_instances.labels.tolist() == [a['category_id'] - 1 for a in anns]
    for mask, ann in zip(masks, anns):
        assert np.array_equal(mask.astype(bool), coco.annToMask(ann).astype(bool))
    boxes = sample.gt_instances.bboxes.tensor.numpy()
    assert np.allclose(boxes[:, 2:] - boxes[:, :2], [a['bbox'][2:] for a in anns])


def test_instance_dataset_marks_crowds_ignored(data_root):
    from mmengine.registry import DATASETS, init_default_scope
    init_default_scope('mmdet')
    dataset = DATASETS.build(dict(
        type='mmeomt.SyntheticInstanceDataset', data_root=osp.join(data_root, 'coco'),
        ann_file='annotations/instances_train2017.json', data_prefix=dict(img='train2017/'),
        pipeline=[dict(type='LoadImageFromFile'),
                  dict(type='LoadAnnotations', with_bbox=True, with_mask=True)]))
    results = dataset[NUM_TRAIN - 1]
    assert results['gt_ignore_flags'].any() and not results['gt_ignore_flags'].all()
    assert len(results['gt_masks']) == len(results['gt_ignore_flags'])


def test_semantic_dataset_through_mmseg_pipeline(data_root):
    from mmengine.registry import DATASETS, init_default_scope
    init_default_scope('mmseg')
    dataset = DATASETS.build(dict(
        type='mmeomt.SyntheticSemanticDataset', data_root=osp.join(data_root, 'ade'),
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
        pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                  dict(type='PackSegInputs')]))
    assert len(dataset) == NUM_VAL
    assert dataset.metainfo['classes'] == CLASSES and len(dataset.metainfo['palette']) == 8
    item = dataset[0]
    sample = item['data_samples']
    png = np.array(Image.open(sample.seg_map_path))
    sem = sample.gt_sem_seg.data[0].numpy()
    # reduce_zero_label: 0 (unlabelled) -> 255, class k -> k - 1.
    assert np.array_equal(sem, np.where(png == 0, 255, png.astype(np.int64) - 1))
    assert item['inputs'].shape[1:] == png.shape


# ------------------------------------------------------------------------------ idempotency


def test_same_parameters_write_nothing_new_ones_regenerate(data_root, tmp_path):
    root = str(tmp_path / 'data')
    first = generate_synthetic_dataset(root, num_train=2, num_val=1, seed=3)
    stamp = {p: os.stat(osp.join(root, p)).st_mtime_ns for p in read_tree(root)}
    assert generate_synthetic_dataset(root, num_train=2, num_val=1, seed=3) == first
    assert {p: os.stat(osp.join(root, p)).st_mtime_ns for p in read_tree(root)} == stamp

    second = generate_synthetic_dataset(root, num_train=3, num_val=1, seed=3)
    assert second['params']['num_train'] == 3
    assert len(os.listdir(osp.join(root, 'coco/train2017'))) == 3
    # Nothing is left beside the dataset: the temp and the replaced directory are gone.
    assert os.listdir(tmp_path) == ['data']


def test_refuses_to_overwrite_a_directory_it_did_not_write(tmp_path):
    (tmp_path / 'mine').mkdir()
    (tmp_path / 'mine' / 'precious.txt').write_text('keep')
    with pytest.raises(FileExistsError, match='manifest'):
        generate_synthetic_dataset(str(tmp_path / 'mine'), num_train=1, num_val=1)
    assert (tmp_path / 'mine' / 'precious.txt').read_text() == 'keep'


def test_an_empty_directory_is_filled(tmp_path):
    (tmp_path / 'data').mkdir()
    generate_synthetic_dataset(str(tmp_path / 'data'), num_train=1, num_val=1)
    assert (tmp_path / 'data' / 'manifest.json').exists()


def test_interrupted_run_leaves_no_dataset(tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    # After the first scene's COCO files, before its semantic map.
    monkeypatch.setattr(synthetic.ade.AdeSemanticWriter, 'add', crash)
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic_dataset(str(tmp_path / 'data'), num_train=2, num_val=1)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('field,value', [('num_train', -1), ('num_val', 2.5), ('seed', '0')])
def test_bad_parameters_are_named(tmp_path, field, value):
    kwargs = dict(num_train=1, num_val=1, seed=0)
    kwargs[field] = value
    with pytest.raises(ValueError, match=field):
        generate_synthetic_dataset(str(tmp_path / 'data'), **kwargs)


def test_cli_generates_once(tmp_path, capsys):
    sys.path.insert(0, osp.join(osp.dirname(__file__), '../../tools/dataset_converters'))
    try:
        import make_synthetic
    finally:
        sys.path.pop(0)
    out = str(tmp_path / 'synthetic')
    argv = ['--out', out, '--num-train', '2', '--num-val', '1', '--seed', '5']
    manifest = make_synthetic.main(argv)
    assert manifest['params'] == dict(num_train=2, num_val=1, seed=5)
    assert 'train: 2 images' in capsys.readouterr().out
    mtime = os.stat(osp.join(out, 'manifest.json')).st_mtime_ns
    assert make_synthetic.main(argv) == manifest
    assert os.stat(osp.join(out, 'manifest.json')).st_mtime_ns == mtime
