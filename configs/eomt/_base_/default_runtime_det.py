# Runtime of the panoptic and instance configs: mmdet's scope, datasets, metrics and visualiser.
_base_ = ['./default_runtime.py']

default_scope = 'mmdet'
default_hooks = dict(
    checkpoint=dict(interval=5000), visualization=dict(type='DetVisualizationHook'))
visualizer = dict(type='DetLocalVisualizer')
