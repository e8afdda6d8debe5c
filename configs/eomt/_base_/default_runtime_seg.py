# Runtime of the semantic configs: mmseg's scope, datasets, metric and visualiser.
_base_ = ['./default_runtime.py']

default_scope = 'mmseg'
default_hooks = dict(
    checkpoint=dict(interval=4000), visualization=dict(type='SegVisualizationHook'))
visualizer = dict(type='SegLocalVisualizer')
