"""mmdet's ``DetVisualizationHook`` that can draw a panoptic prediction without segments."""
from mmdet.engine.hooks import DetVisualizationHook as MMDetDetVisualizationHook

from mmeomt.registry import HOOKS


@HOOKS.register_module()
class DetVisualizationHook(MMDetDetVisualizationHook):
    """mmdet's hook (same arguments), except for an image whose panoptic prediction has no
    segment (every pixel void): mmdet's ``DetLocalVisualizer`` fails on it, so the image is
    drawn without that prediction (:func:`~mmeomt.apis.inferencer.drop_empty_panoptic`, as
    ``EoMTInferencer`` draws it).

    (With mmdet's ``CocoPanopticMetric`` in front, such a prediction used to be drawn as a
    segment of class 0: that metric writes VOID (0) into the prediction's void pixels in place.
    ``mmeomt.CocoPanopticMetric`` leaves the prediction as the model gave it.)
    """

    def _drawable(self, outputs):
        from mmeomt.apis.inferencer import drop_empty_panoptic
        num_classes = len(self._visualizer.dataset_meta['classes'])
        return [drop_empty_panoptic(sample, num_classes) for sample in outputs]

    def after_val_iter(self, runner, batch_idx: int, data_batch: dict, outputs) -> None:
        if self.draw:
            outputs = self._drawable(outputs)
        super().after_val_iter(runner, batch_idx, data_batch, outputs)

    def after_test_iter(self, runner, batch_idx: int, data_batch: dict, outputs) -> None:
        if self.draw:
            outputs = self._drawable(outputs)
        super().after_test_iter(runner, batch_idx, data_batch, outputs)
