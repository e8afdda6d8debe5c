"""One unreadable image does not cost an evaluation: ``tools/test.py`` names it and stops, or
with ``--skip-bad-images`` leaves it out, evaluates the others and says how many it skipped --
with the metric the same evaluation gives on an annotation file without that image."""
import glob
import json
import os.path as osp
import shutil

from helpers import noise_everywhere_checkpoint, run_tool, write_config

PANOPTIC = 'annotations/panoptic_train2017.json'
EVALUATE_TRAIN = '''
test_dataloader = dict(batch_size=1, dataset=dict(
    data_root=data_root, ann_file='{ann}',
    data_prefix=dict(img='train2017/', seg='annotations/panoptic_train2017/')))
test_evaluator = dict(ann_file=data_root + '{ann}',
                      seg_prefix=data_root + 'annotations/panoptic_train2017/')
'''


def metrics_of(work_dir):
    (log,) = glob.glob(osp.join(work_dir, '*', '*.json'))
    with open(log, encoding='utf-8') as f:
        return json.loads(f.readlines()[-1])


def test_skip_bad_images_evaluates_the_rest(tmp_path, synthetic_root):
    data = tmp_path / 'data'
    shutil.copytree(osp.join(synthetic_root, 'coco'), data / 'coco')
    coco = data / 'coco'
    bad = coco / 'train2017' / '000000000002.jpg'
    bad.write_bytes(bad.read_bytes()[:500])  # truncated
    # The reference: the same files without images 2 and 5 (5 is deleted below).
    annotations = json.loads((coco / PANOPTIC).read_text())
    annotations['images'] = [i for i in annotations['images'] if i['id'] not in (2, 5)]
    annotations['annotations'] = [a for a in annotations['annotations']
                                  if a['image_id'] not in (2, 5)]
    (coco / 'annotations' / 'without_2_5.json').write_text(json.dumps(annotations))

    config = write_config(str(tmp_path / 'all.py'), str(data),
                          extra=EVALUATE_TRAIN.format(ann=PANOPTIC))
    reference = write_config(str(tmp_path / 'without_2_5.py'), str(data),
                             extra=EVALUATE_TRAIN.format(ann='annotations/without_2_5.json'))
    checkpoint = noise_everywhere_checkpoint(config, str(tmp_path / 'noise.pth'))

    stopped = run_tool(['test.py', config, checkpoint, '--work-dir', str(tmp_path / 'a')])
    assert stopped.returncode != 0
    assert f'UnreadableImageError: image {bad}: cannot be decoded' in stopped.stderr

    # A missing image is left out as well (without the option it stops the run when the
    # dataset is built, naming the file).
    missing = coco / 'train2017' / '000000000005.jpg'
    missing.unlink()
    skipping = run_tool(['test.py', config, checkpoint, '--work-dir', str(tmp_path / 'b'),
                         '--skip-bad-images'])
    assert skipping.returncode == 0, skipping.stderr[-3000:]
    assert f'leaving out 2 of 8 samples of SyntheticPanopticDataset whose files cannot be ' \
           f'read: {bad}: cannot be decoded' in skipping.stdout + skipping.stderr
    assert f'{missing}: no such file' in skipping.stdout + skipping.stderr
    skipped = metrics_of(str(tmp_path / 'b'))
    assert skipped['skipped_images'] == 2

    done = run_tool(['test.py', reference, checkpoint, '--work-dir', str(tmp_path / 'c')])
    assert done.returncode == 0, done.stderr[-3000:]
    expected = metrics_of(str(tmp_path / 'c'))
    keys = [k for k in expected if k.startswith('coco_panoptic/')]
    assert {k: skipped[k] for k in keys} == {k: expected[k] for k in keys}
    assert expected['coco_panoptic/PQ'] > 0


def test_coco_instance_metric_leaves_skipped_images_out(synthetic_root):
    # mmdet's CocoMetric evaluates every image of its annotation file: a skipped image's
    # annotations would count as missed.
    from mmdet.evaluation import CocoMetric, CocoPanopticMetric
    from mmengine.evaluator import Evaluator

    from mmeomt.engine.hooks import exclude_from_metrics

    coco = osp.join(synthetic_root, 'coco', 'annotations')
    instance = CocoMetric(ann_file=osp.join(coco, 'instances_train2017.json'), metric='segm')
    panoptic = CocoPanopticMetric(ann_file=osp.join(coco, 'panoptic_train2017.json'),
                                  seg_prefix=osp.join(coco, 'panoptic_train2017'))
    assert instance.img_ids is None  # mmdet then takes all images of the file
    assert exclude_from_metrics(Evaluator([instance, panoptic]), [1, 3, 4]) == 1
    assert instance.img_ids == [1, 3, 4]
