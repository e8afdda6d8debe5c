"""Deployment: ONNX export of the EoMT core and an ONNX Runtime backend for the inferencers.

Needs the optional packages of ``requirements/deploy.txt`` (onnx, onnxruntime, onnxscript),
imported only when used; mmeomt itself does not require them.
"""
from .export import (DEFAULT_OPSET, FinalPrediction, check_exportable, default_input_size,
                     export_core, export_from_config, export_onnx, load_model, model_task)
from .metadata import METADATA_KEYS, decode_metadata, encode_metadata, require
from .runtime import OnnxEoMT, make_session, onnx_backend_config, resolve_providers

__all__ = ['DEFAULT_OPSET', 'FinalPrediction', 'check_exportable', 'default_input_size',
           'export_core', 'export_from_config', 'export_onnx', 'load_model', 'model_task',
           'METADATA_KEYS', 'decode_metadata', 'encode_metadata', 'require', 'OnnxEoMT',
           'make_session', 'onnx_backend_config', 'resolve_providers']
