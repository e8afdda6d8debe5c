"""mmeomt's registries: one child of each mmengine root registry, under the scope ``mmeomt``.

Configs keep the scope of the library whose datasets and metrics they use (``default_scope =
'mmdet'`` for panoptic/instance, ``'mmseg'`` for semantic) and name mmeomt's modules with the
``mmeomt.`` prefix, e.g. ``type='mmeomt.EoMTDetector'``.  mmengine resolves a prefixed type by
importing ``mmeomt.registry`` and searching the ``mmeomt`` child of the root registry, so the name
is unambiguous in either scope.  ``locations`` lets that lookup import the modules on demand.
"""
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import INFERENCERS as MMENGINE_INFERENCERS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import \
    OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
from mmengine.registry import PARAM_SCHEDULERS as MMENGINE_PARAM_SCHEDULERS
from mmengine.registry import RUNNERS as MMENGINE_RUNNERS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='mmeomt',
                  locations=['mmeomt.models', 'mmeomt.deployment'])
MODEL_WRAPPERS = Registry('model_wrapper', parent=MMENGINE_MODEL_WRAPPERS, scope='mmeomt',
                          locations=['mmeomt.engine'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='mmeomt', locations=['mmeomt.engine'])
OPTIM_WRAPPER_CONSTRUCTORS = Registry(
    'optimizer wrapper constructor', parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS, scope='mmeomt',
    locations=['mmeomt.engine'])
OPTIM_WRAPPERS = Registry('optim_wrapper', parent=MMENGINE_OPTIM_WRAPPERS, scope='mmeomt',
                          locations=['mmeomt.engine'])
PARAM_SCHEDULERS = Registry(
    'parameter scheduler', parent=MMENGINE_PARAM_SCHEDULERS, scope='mmeomt',
    locations=['mmeomt.engine'])
RUNNERS = Registry('runner', parent=MMENGINE_RUNNERS, scope='mmeomt', locations=['mmeomt.engine'])
DATASETS = Registry('dataset', parent=MMENGINE_DATASETS, scope='mmeomt',
                    locations=['mmeomt.datasets'])
TRANSFORMS = Registry('transform', parent=MMENGINE_TRANSFORMS, scope='mmeomt',
                      locations=['mmeomt.datasets'])
METRICS = Registry('metric', parent=MMENGINE_METRICS, scope='mmeomt',
                   locations=['mmeomt.evaluation'])
INFERENCERS = Registry('inferencer', parent=MMENGINE_INFERENCERS, scope='mmeomt',
                       locations=['mmeomt.apis'])
