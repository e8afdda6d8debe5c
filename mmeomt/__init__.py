"""mmeomt: EoMT ("Your ViT is Secretly an Image Segmentation Model") for OpenMMLab."""
# Before anything imports mmdet's panoptic code, which looks for panopticapi at import time.
from .utils.panopticapi_compat import install as _install_panopticapi

_install_panopticapi()

import mmcv  # noqa: E402
import mmengine  # noqa: E402
from mmengine.utils import digit_version  # noqa: E402

from .version import __version__, version_info  # noqa: E402

MMCV_MIN, MMCV_MAX = '2.0.0rc4', '2.2.0'
MMENGINE_MIN, MMENGINE_MAX = '0.10.0', '1.0.0'

mmcv_version = digit_version(mmcv.__version__)
assert digit_version(MMCV_MIN) <= mmcv_version < digit_version(MMCV_MAX), (
    f'mmeomt needs {MMCV_MIN} <= mmcv < {MMCV_MAX} (the range mmdet 3.3 and mmseg 1.2 accept); '
    f'found mmcv {mmcv.__version__}. Run tools/setup_env.sh or see README.md.')
mmengine_version = digit_version(mmengine.__version__)
assert digit_version(MMENGINE_MIN) <= mmengine_version < digit_version(MMENGINE_MAX), (
    f'mmeomt needs {MMENGINE_MIN} <= mmengine < {MMENGINE_MAX}; found {mmengine.__version__}.')

__all__ = ['__version__', 'version_info']
