# Runtime of the panoptic and instance configs: mmdet's scope, datasets, metrics and visualiser.
_base_ = ['./default_runtime.py']

default_scope = 'mmdet'
# mmdet's visualisation hook, able to draw a panoptic prediction without segments
# (mmeomt/engine/hooks/visualization_hook.py).
default_hooks = dict(
    checkpoint=dict(interval=5000), visualization=dict(type='mmeomt.DetVisualizationHook'))
visualizer = dict(type='DetLocalVisualizer')
