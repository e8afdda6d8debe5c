from .checkpoint_io import atomic_torch_save, atomic_write, load_from_local
from .hub import download, load_checkpoint_file, url_cache_path
from .panopticapi_compat import install as install_panopticapi_compat

__all__ = [
    'install_panopticapi_compat', 'download', 'load_checkpoint_file', 'url_cache_path',
    'atomic_write', 'atomic_torch_save', 'load_from_local'
]
