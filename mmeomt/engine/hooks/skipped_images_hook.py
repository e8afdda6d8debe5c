"""Reports the samples a ``SkipUnreadableImages`` dataset left out, in the metrics."""
from typing import Optional

from mmengine.hooks import Hook

from mmeomt.registry import HOOKS


def exclude_from_metrics(evaluator, img_ids: list) -> int:
    """Restrict the metrics of ``evaluator`` that evaluate every image of their annotation file
    to ``img_ids``: mmdet's ``CocoMetric`` would count the annotations of a skipped image as
    missed.  Returns how many metrics were restricted.  (``CocoPanopticMetric`` and mmseg's
    ``IoUMetric`` score only the images they are given.)"""
    from mmdet.evaluation import CocoMetric

    restricted = 0
    for metric in getattr(evaluator, 'metrics', []):
        if isinstance(metric, CocoMetric):
            metric.img_ids = list(img_ids)
            restricted += 1
    return restricted


@HOOKS.register_module()
class SkippedImagesHook(Hook):
    """Adds ``skipped_images`` (how many samples the evaluated dataset left out because their
    files cannot be read) to the validation and test metrics, and keeps those samples out of
    the metrics that would count them as missed (:func:`exclude_from_metrics`).

    Does nothing for a dataset that is not a ``mmeomt.SkipUnreadableImages``.
    """

    # Before RuntimeInfoHook (VERY_HIGH), which hands the metrics to the logger.
    priority = 'HIGHEST'

    @staticmethod
    def _dataset(loader):
        dataset = getattr(loader, 'dataset', None)
        return dataset if hasattr(dataset, 'skipped') and hasattr(dataset, 'kept') else None

    def _before(self, runner, loader, evaluator) -> None:
        dataset = self._dataset(loader)
        if dataset is not None and dataset.skipped:
            img_ids = [dataset.get_data_info(i).get('img_id') for i in range(len(dataset))]
            exclude_from_metrics(evaluator, img_ids)

    def _after(self, loader, metrics: Optional[dict]) -> None:
        dataset = self._dataset(loader)
        if dataset is not None and metrics is not None:
            # A float like the other metrics: mmengine's JSON log drops numpy integers.
            metrics['skipped_images'] = float(len(dataset.skipped))

    def before_test_epoch(self, runner) -> None:
        self._before(runner, runner.test_dataloader, runner.test_evaluator)

    def after_test_epoch(self, runner, metrics: Optional[dict] = None) -> None:
        self._after(runner.test_dataloader, metrics)

    def before_val_epoch(self, runner) -> None:
        self._before(runner, runner.val_dataloader, runner.val_evaluator)

    def after_val_epoch(self, runner, metrics: Optional[dict] = None) -> None:
        self._after(runner.val_dataloader, metrics)
