"""Convert an EoMT checkpoint (the authors' release or transformers) to an mmeomt checkpoint.

Examples::

    # the authors' weights (https://huggingface.co/tue-mps/<name>/resolve/main/pytorch_model.bin)
    python tools/model_converters/eomt2mmeomt.py pytorch_model.bin eomt_coco_panoptic_l640.pth
    # transformers EomtForUniversalSegmentation (model.safetensors or pytorch_model.bin)
    python tools/model_converters/eomt2mmeomt.py model.safetensors eomt_l640.pth
    # initialise another dataset's model (the class head is then trained from scratch)
    python tools/model_converters/eomt2mmeomt.py pytorch_model.bin init.pth --no-class-head
    # the authors' EoMT-DINOv3 weights: deltas, added to the (gated) DINOv3 weights
    python tools/model_converters/eomt2mmeomt.py pytorch_model.bin eomt_dinov3_l640.pth \
        --base dinov3-vitl16-pretrain-lvd1689m/model.safetensors
    # transformers EomtDinov3ForUniversalSegmentation (absolute weights, no --base)
    python tools/model_converters/eomt2mmeomt.py model.safetensors eomt_dinov3_l640.pth

The output is ``{'state_dict': ..., 'meta': ...}`` with keys under ``eomt.`` (the core inside
``EoMTDetector`` / ``EoMTSegmentor``), usable as ``load_from`` in a config.
"""
import argparse
import os
import sys

from mmeomt.models.checkpoint.dinov3 import (convert_eomt_dinov3_checkpoint,
                                             detect_eomt_dinov3_format)
from mmeomt.models.checkpoint import (convert_eomt_checkpoint, detect_eomt_checkpoint_format,
                                      load_checkpoint_file, state_dict_of)
from mmeomt.utils import atomic_torch_save
from mmeomt.version import __version__


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert an EoMT checkpoint (authors\' tue-mps/eomt release or transformers '
        'EomtForUniversalSegmentation) to an mmeomt checkpoint.')
    parser.add_argument('src', help='source checkpoint (.bin/.pth/.ckpt or .safetensors)')
    parser.add_argument('dst', help='output mmeomt checkpoint (.pth)')
    parser.add_argument('--prefix', default='eomt.',
                        help="key prefix of the EoMT core in the model to load into "
                        "(default 'eomt.' for EoMTDetector/EoMTSegmentor; '' for a bare EoMT)")
    parser.add_argument('--base', default=None,
                        help="the DINOv3 weights (transformers, timm or original layout) that "
                        "an authors' EoMT-DINOv3 delta checkpoint is added to")
    parser.add_argument('--no-class-head', action='store_true',
                        help='drop the class head (to fine-tune on another label set)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    prefix = args.prefix
    if prefix and not prefix.endswith('.'):
        prefix += '.'
    try:
        # Weights only (a .safetensors file, or a torch file of tensors), as from any URL.
        state_dict = state_dict_of(load_checkpoint_file(args.src, 'cpu'), args.src)
        fmt = detect_eomt_dinov3_format(state_dict)
        if fmt is not None:
            base = None
            if args.base and fmt == 'authors':
                base = state_dict_of(load_checkpoint_file(args.base, 'cpu'), args.base)
            converted = convert_eomt_dinov3_checkpoint(state_dict, base=base, prefix=prefix,
                                                       base_hint='pass them with --base')
            fmt = f'{fmt} (DINOv3)'
        else:
            fmt = detect_eomt_checkpoint_format(state_dict)
            converted = convert_eomt_checkpoint(state_dict, prefix=prefix)
    except (OSError, ValueError, RuntimeError) as error:
        print(f'eomt2mmeomt: {error}', file=sys.stderr)
        return 1
    if args.no_class_head:
        converted = {k: v for k, v in converted.items()
                     if not k.startswith(prefix + 'class_head.')}
    # mmengine's layout, written atomically: a killed conversion leaves no half-written file.
    atomic_torch_save(dict(state_dict=converted, meta=dict(
        converted_from=os.path.basename(args.src), source_format=fmt, key_prefix=prefix,
        dinov3_base=os.path.basename(args.base) if args.base else None,
        class_head=not args.no_class_head, mmeomt_version=__version__)), args.dst)
    print(f'eomt2mmeomt: {args.src} ({fmt} format, {len(state_dict)} keys) -> {args.dst} '
          f'({len(converted)} keys under {prefix!r})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
