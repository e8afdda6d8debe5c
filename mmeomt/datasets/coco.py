"""mmdet's COCO instance and panoptic datasets, without silent data loss.

mmdet's ``CocoDataset`` drops every annotation whose category is not among the classes without
a word (a file whose category names differ from the classes trains on nothing), maps labels by
the order of the file's categories whatever the order of the classes, and ends in ``need at
least one array to concatenate`` when nothing is left; its ``CocoPanopticDataset`` raises a bare
``KeyError`` on such a segment.  The subclasses here read the same files into the same
``data_list`` (the pipelines, metrics and visualisers see no difference) and:

* check the categories against the classes: every class must be a category of the file, in
  the same order (mmdet's metrics map label ``i`` to the file's ``i``-th class category), else a
  ``ValueError`` lists them;
* treat an annotation (panoptic: a segment) whose category is not a class, and an image whose
  file (panoptic: or segment PNG) is missing, according to ``on_bad_data``: ``'error'`` (the
  default) raises a ``ValueError`` naming the file, image and annotation ids; ``'skip'`` drops
  them and warns with the counts;
* refuse an annotation file that is not JSON, lists no images, or (for training) holds no
  annotations or leaves no image after filtering, naming the file and what was dropped why;
* log once how many images and annotations were kept and dropped, and why (COCO's own rules --
  ``ignore`` flags, empty boxes, ``filter_cfg`` -- included);
* name the sample's files in any error of its pipeline, and raise
  :class:`~mmeomt.datasets.image_check.UnreadableImageError` when one of them cannot be decoded
  (:class:`NamedSampleErrorsMixin`).

Panoptic segments dropped here are listed in ``data_info['ignored_segment_ids']``, so that
``mmeomt.LoadPanopticAnnotations`` treats their pixels as void, as mmdet does, instead of
reporting them as colours without a JSON entry.
"""
import json
import logging
import os.path as osp
from collections import Counter, defaultdict
from typing import Dict, List, Optional

from mmdet.datasets import ADE20KPanopticDataset as _MMDetADE20KPanopticDataset
from mmdet.datasets import CocoDataset as _MMDetCocoDataset
from mmdet.datasets import CocoPanopticDataset as _MMDetCocoPanopticDataset
from mmengine.fileio import get_local_path
from mmengine.logging import print_log

from mmeomt.registry import DATASETS
from .image_check import UnreadableImageError, image_problem

BAD_DATA_CHOICES = ('error', 'skip')
_SAMPLE_FILES = (('img_path', 'image'), ('seg_map_path', 'segmentation map'))


class NamedSampleErrorsMixin:
    """``prepare_data`` whose errors say which sample's pipeline failed.

    A file of the sample (``img_path``, ``seg_map_path``) that cannot be decoded turns the error
    into :class:`UnreadableImageError` naming it; any other error keeps its type and gets the
    sample's index, image id and files as a note.  Nothing is checked unless the pipeline fails.
    """

    def prepare_data(self, idx):
        try:
            return super().prepare_data(idx)
        except UnreadableImageError:
            raise
        except Exception as error:
            info = self.get_data_info(idx)
            backend_args = getattr(self, 'backend_args', None)
            for key, what in _SAMPLE_FILES:
                path = info.get(key)
                if isinstance(path, str):
                    problem = image_problem(path, backend_args)
                    if problem is not None:
                        raise UnreadableImageError(path, problem, what) from error
            files = ', '.join(f'{key}={info[key]}' for key, _ in _SAMPLE_FILES if info.get(key))
            error.add_note(f'{type(self).__name__}: in the pipeline of sample {idx} '
                           f'(img_id={info.get("img_id")}, {files})')
            raise


class _CheckedCocoMixin(NamedSampleErrorsMixin):
    """What the instance and panoptic datasets share (see the module docstring)."""

    _ANNOTATIONS = 'annotations'  # what the report calls them

    def __init__(self, *args, on_bad_data: str = 'error', check_files: bool = True, **kwargs):
        if on_bad_data not in BAD_DATA_CHOICES:
            raise ValueError(f'{type(self).__name__}: on_bad_data must be one of '
                             f'{BAD_DATA_CHOICES}, got {on_bad_data!r}')
        self.on_bad_data = on_bad_data
        self.check_files = check_files
        super().__init__(*args, **kwargs)

    # --- reading and checking the file ----------------------------------------------------

    def _read_annotation_file(self):
        name = type(self).__name__
        if not osp.isfile(self.ann_file) and '://' not in self.ann_file:
            raise FileNotFoundError(f'{name}: annotation file {self.ann_file} does not exist')
        try:
            with get_local_path(self.ann_file, backend_args=self.backend_args) as local_path:
                coco = self.COCOAPI(local_path)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f'{name}: {self.ann_file} is not a JSON file ({error}); an empty '
                             'or truncated download?') from None
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f'{name}: {self.ann_file} is not a COCO annotation file (needs '
                             f'"images", "annotations" and "categories"): {error!r}') from None
        if not coco.dataset.get('images'):
            raise ValueError(f'{name}: {self.ann_file} lists no images')
        # (Panoptic files list one entry per image; the segments are what counts.)
        if not self.test_mode and not any(coco.img_ann_map.values()):
            raise ValueError(
                f'{name}: {self.ann_file} lists {len(coco.dataset["images"])} images but no '
                'annotations: nothing to train on (an image list without annotations, such '
                'as COCO test-dev, can only be used with test_mode=True)')
        return coco

    def _map_categories(self) -> None:
        """``self.cat_ids`` and ``self.cat2label`` from the file's categories, checked."""
        name, classes = type(self).__name__, tuple(self.metainfo['classes'])
        by_name = defaultdict(list)
        for cat_id, cat in self.coco.cats.items():
            by_name[cat['name']].append(cat_id)
        twice = sorted(n for n, ids in by_name.items() if n in classes and len(ids) > 1)
        if twice:
            raise ValueError(f'{name}: {self.ann_file} has several categories named '
                             f'{twice}: {dict((n, by_name[n]) for n in twice)}')
        missing = [c for c in classes if c not in by_name]
        if missing:
            raise ValueError(
                f'{name}: the classes {missing} have no category in {self.ann_file} (its '
                f'categories: {sorted(by_name)}); the dataset\'s classes (metainfo) must name '
                'categories of the file')
        in_file_order = [c['name'] for c in self.coco.dataset.get('categories', [])
                         if c['name'] in classes]
        if in_file_order != list(classes):
            raise ValueError(
                f'{name}: the categories of {self.ann_file} come in the order {in_file_order}, '
                f'the classes in {list(classes)}; mmdet\'s metrics give label i the i-th of '
                'the file\'s categories, so the two orders must agree')
        self.cat_ids = [by_name[c][0] for c in classes]
        self.cat2label = {cat_id: label for label, cat_id in enumerate(self.cat_ids)}
        self.cat_img_map = {cat_id: list(self.coco.cat_img_map.get(cat_id, []))
                            for cat_id in self.cat_ids}

    def load_data_list(self) -> List[dict]:
        self.coco = self._read_annotation_file()
        self._map_categories()
        self._report = dict(images=Counter(), annotations=Counter(), total_annotations=0,
                            bad_examples=[])
        self._images_with_class_annotations = set()
        data_list = []
        for img_id in self.coco.get_img_ids():
            img_info = dict(self.coco.load_imgs([img_id])[0], img_id=img_id)
            ann_info = list(self.coco.img_ann_map.get(img_id, []))
            self._report['total_annotations'] += len(ann_info)
            data_info = self.parse_data_info(dict(raw_img_info=img_info, raw_ann_info=ann_info))
            if data_info is not None and self._files_present(data_info):
                data_list.append(data_info)
        del self.coco
        self._report['total_images'] = len(data_list) + self._report['images']['missing file']
        return data_list

    def _files_present(self, data_info: dict) -> bool:
        local = self.backend_args is None or self.backend_args.get('backend') == 'local'
        if not (self.check_files and local):
            return True
        for key, what in _SAMPLE_FILES:
            path = data_info.get(key)
            if path is not None and not osp.isfile(path):
                self._bad(f'{what} {path} of image {data_info["img_id"]} (listed in '
                          f'{self.ann_file}) does not exist', 'images', 'missing file')
                return False
        return True

    def _bad(self, message: str, kind: str, reason: str) -> None:
        """Raise for bad data or, with ``on_bad_data='skip'``, count it."""
        if self.on_bad_data == 'error':
            raise ValueError(f'{type(self).__name__}: {message}. To drop such data with a '
                             "warning instead, set on_bad_data='skip' in the dataset config")
        self._report[kind][reason] += 1
        if len(self._report['bad_examples']) < 3:
            self._report['bad_examples'].append(message)

    def _bad_category(self, ann: dict, img_info: dict, what: str) -> None:
        cat_id = ann.get('category_id')
        cat = self.coco.cats.get(cat_id)
        known = f'"{cat["name"]}"' if cat else "not among the file's categories"
        self._bad(f'{what} {ann.get("id")} of image {img_info["img_id"]} '
                  f'({img_info.get("file_name")}) in {self.ann_file} has category_id {cat_id} '
                  f'({known}), which is not one of the classes', 'annotations',
                  'category not in classes')

    @staticmethod
    def _degenerate(ann: dict, img_info: Optional[dict] = None) -> bool:
        """COCO's rule: no area, a box under a pixel wide or high, or (instance) outside the
        image."""
        x, y, w, h = ann['bbox']
        if ann.get('area', 0) <= 0 or w < 1 or h < 1:
            return True
        if img_info is not None:
            inside_w = min(x + w, img_info['width']) - max(x, 0)
            inside_h = min(y + h, img_info['height']) - max(y, 0)
            return inside_w <= 0 or inside_h <= 0
        return False

    def _base_info(self, img_info: dict) -> dict:
        info = dict(img_path=osp.join(self.data_prefix['img'], img_info['file_name']),
                    img_id=img_info['img_id'], seg_map_path=None,
                    height=img_info['height'], width=img_info['width'])
        return info

    # --- filtering and the report ---------------------------------------------------------

    def _keep_for_training(self, data_info: dict) -> bool:
        raise NotImplementedError

    def filter_data(self) -> List[dict]:
        report = self._report
        if self.test_mode or self.filter_cfg is None:
            kept = self.data_list
        else:
            filter_empty_gt = self.filter_cfg.get('filter_empty_gt', False)
            min_size = self.filter_cfg.get('min_size', 0)
            kept = []
            for data_info in self.data_list:
                if filter_empty_gt and not self._keep_for_training(data_info):
                    report['images']['no annotation of the classes (filter_empty_gt)'] += 1
                elif min(data_info['width'], data_info['height']) < min_size:
                    report['images'][f'shorter side under {min_size} px (min_size)'] += 1
                else:
                    kept.append(data_info)
        self._log_report(len(kept))
        if not kept:
            raise ValueError(f'{type(self).__name__}: no image of {self.ann_file} is left: '
                             f'{self._describe_drops()}')
        return kept

    def _describe_drops(self) -> str:
        report = self._report
        parts = [f'{n} images: {reason}' for reason, n in report['images'].items()]
        parts += [f'{n} {self._ANNOTATIONS}: {reason}'
                  for reason, n in report['annotations'].items()]
        return '; '.join(parts) if parts else 'nothing'

    def _log_report(self, num_kept: int) -> None:
        report = self._report
        dropped_annotations = sum(report['annotations'].values())
        message = (f'{type(self).__name__} ({self.ann_file}): kept {num_kept} of '
                   f'{report["total_images"]} images and '
                   f'{report["total_annotations"] - dropped_annotations} of '
                   f'{report["total_annotations"]} {self._ANNOTATIONS}; dropped: '
                   f'{self._describe_drops()}')
        print_log(message, logger='current')
        skipped = report['images']['missing file'] + report['annotations'][
            'category not in classes']
        if skipped:
            print_log(f'{type(self).__name__}: on_bad_data=\'skip\' dropped {skipped} bad '
                      f'items of {self.ann_file}, e.g. ' + ' | '.join(report['bad_examples']),
                      logger='current', level=logging.WARNING)


@DATASETS.register_module()
class CocoDataset(_CheckedCocoMixin, _MMDetCocoDataset):
    """mmdet's ``CocoDataset`` (instance segmentation) with the checks of the module docstring.

    Args:
        on_bad_data: ``'error'`` (default) or ``'skip'``: what to do with an annotation whose
            category is not a class and with an image whose file is missing.
        check_files: look up every image file when the dataset is built (local files only).
        *args, **kwargs: mmdet's ``CocoDataset`` arguments.
    """

    def parse_data_info(self, raw_data_info: dict) -> dict:
        img_info, ann_info = raw_data_info['raw_img_info'], raw_data_info['raw_ann_info']
        data_info = self._base_info(img_info)
        if self.data_prefix.get('seg', None):
            stem = img_info['file_name'].rsplit('.', 1)[0]
            data_info['seg_map_path'] = osp.join(self.data_prefix['seg'],
                                                 stem + self.seg_map_suffix)
        if self.return_classes:
            data_info.update(text=self.metainfo['classes'], caption_prompt=self.caption_prompt,
                             custom_entities=True)
        counts, instances = self._report['annotations'], []
        for ann in ann_info:
            label = self.cat2label.get(ann['category_id'])
            if label is not None:
                self._images_with_class_annotations.add(img_info['img_id'])
            if ann.get('ignore', False):
                counts['marked "ignore"'] += 1
                continue
            if self._degenerate(ann, img_info):
                counts['empty box or area, or outside the image'] += 1
                continue
            if label is None:
                self._bad_category(ann, img_info, 'annotation')
                continue
            x, y, w, h = ann['bbox']
            instance = dict(ignore_flag=1 if ann.get('iscrowd', False) else 0,
                            bbox=[x, y, x + w, y + h], bbox_label=label)
            if ann.get('segmentation', None):
                instance['mask'] = ann['segmentation']
            instances.append(instance)
        data_info['instances'] = instances
        return data_info

    def _keep_for_training(self, data_info: dict) -> bool:
        # mmdet's rule: the image has an annotation of one of the classes (before the box
        # checks; crowds count).
        return data_info['img_id'] in self._images_with_class_annotations


@DATASETS.register_module()
class CocoPanopticDataset(_CheckedCocoMixin, _MMDetCocoPanopticDataset):
    """mmdet's ``CocoPanopticDataset`` with the checks of the module docstring.

    Use it with ``mmeomt.LoadPanopticAnnotations``, which also checks that every segment id
    of the PNGs has an entry in the JSON.

    Args:
        on_bad_data: ``'error'`` (default) or ``'skip'``: what to do with a segment whose
            category is not a class and with an image whose image or PNG file is missing.
        check_files: look up every image and PNG file when the dataset is built (local only).
        *args, **kwargs: mmdet's ``CocoPanopticDataset`` arguments.
    """

    _ANNOTATIONS = 'segments'

    def parse_data_info(self, raw_data_info: dict) -> dict:
        img_info, ann_info = raw_data_info['raw_img_info'], raw_data_info['raw_ann_info']
        data_info = self._base_info(img_info)
        if self.data_prefix.get('seg', None):
            data_info['seg_map_path'] = osp.join(
                self.data_prefix['seg'], img_info['file_name'].replace('.jpg', '.png'))
        if self.return_classes:
            data_info.update(text=self.metainfo['thing_classes'],
                             stuff_text=self.metainfo['stuff_classes'], custom_entities=True)
        counts, instances, segments, ignored = self._report['annotations'], [], [], []
        for seg in ann_info:
            if seg.get('image_id', img_info['img_id']) != img_info['img_id']:
                continue
            label = self.cat2label.get(seg['category_id'])
            if self._degenerate(seg):
                counts['empty box or area (pixels become void)'] += 1
                ignored.append(seg['id'])
                continue
            if label is None:
                self._bad_category(seg, img_info, 'segment')
                ignored.append(seg['id'])  # its pixels become void
                continue
            is_thing = bool(self.coco.cats[seg['category_id']]['isthing'])
            if is_thing and seg.get('iscrowd', False):
                # As mmdet: a crowd is no instance, its pixels keep their class in the map.
                is_thing = False
            elif is_thing:
                x, y, w, h = seg['bbox']
                instances.append(dict(bbox=[x, y, x + w, y + h], bbox_label=label,
                                      ignore_flag=0))
            if is_thing:
                self._images_with_class_annotations.add(img_info['img_id'])
            segments.append(dict(id=seg['id'], category=label, is_thing=is_thing))
        data_info.update(instances=instances, segments_info=segments,
                         ignored_segment_ids=ignored)
        return data_info

    def _keep_for_training(self, data_info: dict) -> bool:
        # mmdet's rule: the image has a (non-crowd) thing segment.
        return data_info['img_id'] in self._images_with_class_annotations


@DATASETS.register_module()
class ADE20KPanopticDataset(CocoPanopticDataset):
    """mmdet's ``ADE20KPanopticDataset`` (its classes) with the checks of
    :class:`CocoPanopticDataset`."""
    METAINFO = _MMDetADE20KPanopticDataset.METAINFO


__all__ = ['NamedSampleErrorsMixin', 'CocoDataset', 'CocoPanopticDataset',
           'ADE20KPanopticDataset', 'BAD_DATA_CHOICES']
