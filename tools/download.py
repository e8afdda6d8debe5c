"""Download model-zoo weights, by default to where ``load_from=URL`` looks for them.

Examples::

    # list the models of configs/eomt/metafile.yml
    python tools/download.py --list
    # fetch the weights into the per-URL cache: afterwards the config (or the inferencer) loads
    # the URL without network access
    python tools/download.py eomt_vit-l_8xb2-12e_coco-panoptic-640
    python tools/download.py coco_panoptic_eomt_large_640        # the authors' name works too
    # or into a folder: <DIR>/<name>.bin plus the resolved config <DIR>/<name>.py
    python tools/download.py eomt_vit-l_8xb2-12e_coco-panoptic-640 --dest checkpoints/

Why not only ``mim download mmeomt --config NAME --dest DIR``: it works (mmeomt's
``model-index.yml`` is in mim's format), but it saves every checkpoint as
``DIR/pytorch_model.bin`` (the URL's file name, the same for all released EoMT models) and skips a
download when that file exists, so a second model in the same folder silently keeps the first
one's weights.  This tool names files per model and, by default, fills the cache of
:mod:`mmeomt.models.checkpoint`.
"""
import argparse
import os
import os.path as osp
import sys

from mmengine.config import Config

from mmeomt.apis.model_zoo import get_model_info, load_model_zoo
from mmeomt.models.checkpoint import download, url_cache_path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Download EoMT model-zoo weights (default: into the cache that '
        'load_from=URL reads, so that the URL then loads offline).')
    parser.add_argument('names', nargs='*', metavar='NAME',
                        help='model names or aliases of the metafile (see --list)')
    parser.add_argument('--metafile', default=None,
                        help='model-index.yml or metafile.yml (default: mmeomt\'s)')
    parser.add_argument('--dest', default=None, metavar='DIR',
                        help='save as DIR/<name><ext> with the config as DIR/<name>.py '
                        'instead of filling the URL cache')
    parser.add_argument('--force', action='store_true', help='download again if present')
    parser.add_argument('--list', action='store_true', help='list the models and exit')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.list:
            for name, info in load_model_zoo(args.metafile).items():
                score = ', '.join(f'{k} {v}' for k, v in info['metrics'].items())
                print(f'{name:48s} {", ".join(info["aliases"]):40s} {info["task"]}, '
                      f'{info["dataset"]}: {score}')
            return 0
        if not args.names:
            print('download: give model names (see --list)', file=sys.stderr)
            return 2
        infos = [get_model_info(name, args.metafile) for name in args.names]
    except (KeyError, ValueError, OSError) as error:
        print(f'download: {error.args[0] if isinstance(error, KeyError) else error}',
              file=sys.stderr)
        return 1

    for info in infos:
        url = info['weights']
        if not url.startswith(('http://', 'https://')):
            print(f'download: {info["name"]}: weights {url!r} are not an http(s) URL',
                  file=sys.stderr)
            return 1
        if args.dest:
            ext = osp.splitext(url.split('?')[0])[1] or '.pth'
            dst = osp.join(args.dest, info['name'] + ext)
        else:
            dst = url_cache_path(url)
        try:
            path = download(url, dst, progress=sys.stderr.isatty(), force=args.force)
        except RuntimeError as error:
            print(f'download: {error}', file=sys.stderr)
            return 1
        print(f'{info["name"]}: {path}')
        if args.dest:
            cfg_path = osp.join(args.dest, info['name'] + '.py')
            Config.fromfile(info['config']).dump(cfg_path)
            print(f'{info["name"]}: config {cfg_path} (load_from={os.path.abspath(path)!r})')
        else:
            print(f'{info["name"]}: load_from={url!r} now loads from this copy')
    return 0


if __name__ == '__main__':
    sys.exit(main())
