from .panopticapi_compat import install as install_panopticapi_compat

__all__ = ['install_panopticapi_compat']
