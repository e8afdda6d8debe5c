"""The model zoo: published models by name, from ``model-index.yml`` and its metafiles.

mmengine's inferencers resolve model names only for the official OpenMMLab packages, so mmeomt
reads its own index, in the format mim reads (``model-index.yml`` importing
``configs/eomt/metafile.yml``).  A model is found by its ``Name`` (the config file name, e.g.
``eomt_vit-l_8xb2-12e_coco-panoptic-640``) or an ``Alias`` (the authors' name, e.g.
``coco_panoptic_eomt_large_640``).
"""
import os.path as osp
from typing import Dict, List, Optional

import yaml

import mmeomt

_PACKAGE = osp.dirname(osp.abspath(mmeomt.__file__))


def default_model_index() -> str:
    """``mmeomt/.mim/model-index.yml`` of an installed package, else the repository's."""
    for path in (osp.join(_PACKAGE, '.mim', 'model-index.yml'),
                 osp.join(osp.dirname(_PACKAGE), 'model-index.yml')):
        if osp.isfile(path):
            return path
    raise FileNotFoundError('mmeomt: model-index.yml not found in the package (.mim/) or the '
                            f'repository ({osp.dirname(_PACKAGE)}); reinstall mmeomt')


def _read(path: str) -> dict:
    with open(path, encoding='utf-8') as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f'{path}: expected a mapping with Import and/or Models')
    return data


def _models(path: str, root: str, seen: set) -> List[dict]:
    """The ``Models`` of ``path`` and of the files it imports (paths relative to ``root``)."""
    path = osp.abspath(path)
    if path in seen:
        return []
    seen.add(path)
    data = _read(path)
    models = []
    for imported in data.get('Import', []) or []:
        models += _models(osp.join(root, imported), root, seen)
    for entry in data.get('Models', []) or []:
        for field in ('Name', 'Config', 'Weights'):
            if not entry.get(field):
                raise ValueError(f'{path}: model {entry.get("Name", "?")!r} has no {field}')
        models.append(dict(entry, _root=root))
    return models


def load_model_zoo(metafile: Optional[str] = None) -> Dict[str, dict]:
    """All models of a model index or metafile, by name.

    Args:
        metafile: a ``model-index.yml`` (``Import``) or ``metafile.yml`` (``Models``); default
            :func:`default_model_index`.  Relative ``Config`` paths and imports are relative to
            its folder.

    Returns:
        ``{Name: info}`` where ``info`` has ``name``, ``aliases``, ``config`` (absolute path),
        ``weights`` (URL or path), ``task``, ``dataset``, ``metrics`` (of the first result) and
        ``metadata``.
    """
    metafile = osp.abspath(metafile or default_model_index())
    zoo = {}
    for entry in _models(metafile, osp.dirname(metafile), set()):
        aliases = entry.get('Alias') or []
        aliases = [aliases] if isinstance(aliases, str) else list(aliases)
        results = entry.get('Results') or [{}]
        weights = entry['Weights']
        weights = weights[0] if isinstance(weights, list) else weights
        config = entry['Config']
        zoo[entry['Name']] = dict(
            name=entry['Name'], aliases=aliases,
            config=config if osp.isabs(config) else osp.join(entry['_root'], config),
            weights=weights, task=results[0].get('Task'), dataset=results[0].get('Dataset'),
            metrics=dict(results[0].get('Metrics') or {}),
            metadata=dict(entry.get('Metadata') or {}))
    return zoo


def get_model_info(name: str, metafile: Optional[str] = None) -> dict:
    """One model of :func:`load_model_zoo` by ``Name`` or ``Alias`` (case-insensitive).

    Raises:
        KeyError: unknown name, listing the known ones.
    """
    zoo = load_model_zoo(metafile)
    wanted = name.lower()
    for info in zoo.values():
        if wanted == info['name'].lower() or wanted in (a.lower() for a in info['aliases']):
            return info
    raise KeyError(f'unknown model {name!r}; known models: {", ".join(sorted(zoo))}')


__all__ = ['default_model_index', 'get_model_info', 'load_model_zoo']
