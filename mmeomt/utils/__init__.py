from .atomic_io import atomic_torch_save, atomic_write
from .panopticapi_compat import install as install_panopticapi_compat

__all__ = ['install_panopticapi_compat', 'atomic_write', 'atomic_torch_save']
