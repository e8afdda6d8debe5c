"""Convert DINOv2 weights (timm, original DINOv2, transformers, mmpretrain) for ``EoMTViT``.

Examples::

    # timm vit_large_patch14_reg4_dinov2 -> EoMT-L at the 640 crop (16x16 kernels, 40x40 grid)
    python tools/model_converters/dinov2_to_mmeomt.py model.safetensors dinov2_l_reg4_p16_640.pth \\
        --patch-size 16 --img-size 640
    # transformers facebook/dinov2-with-registers-large, keeping 14x14 kernels and 37x37 grid
    python tools/model_converters/dinov2_to_mmeomt.py pytorch_model.bin dinov2_l_reg4.pth

The output is ``{'state_dict': ..., 'meta': ...}`` with ``EoMTViT`` keys (no prefix), for
``backbone.init_cfg=dict(type='Pretrained', checkpoint=...)``.  Converting is optional: that
init config accepts the original files too and resamples to the model on load.
"""
import argparse
import os
import sys

from mmeomt.models.checkpoint import (convert_dinov2, detect_dinov2_format, load_checkpoint_file,
                                      state_dict_of)
from mmeomt.utils import atomic_torch_save
from mmeomt.version import __version__


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert DINOv2 weights (timm, original DINOv2, transformers, mmpretrain) '
        'to EoMTViT keys, optionally resampling the patch kernel and position grid.')
    parser.add_argument('src', help='source checkpoint (.pth/.bin or .safetensors)')
    parser.add_argument('dst', help='output checkpoint (.pth)')
    parser.add_argument('--patch-size', type=int, default=None,
                        help='resample the patch-embedding kernels to this size (EoMT: 16)')
    parser.add_argument('--img-size', type=int, nargs='+', default=None, metavar='SIZE',
                        help='training crop, H [W]: resize the position grid to '
                        'ceil(SIZE / patch size)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.patch_size is not None and args.patch_size < 1:
        print(f'dinov2_to_mmeomt: --patch-size must be positive, got {args.patch_size}',
              file=sys.stderr)
        return 2
    if args.img_size is not None and (len(args.img_size) > 2 or min(args.img_size) < 1):
        print(f'dinov2_to_mmeomt: --img-size takes one or two positive sizes (H [W]), got '
              f'{args.img_size}', file=sys.stderr)
        return 2
    try:
        # Weights only (a .safetensors file, or a torch file of tensors), as from any URL.
        state_dict = state_dict_of(load_checkpoint_file(args.src, 'cpu'), args.src)
        fmt, prefix = detect_dinov2_format(state_dict)
        converted = convert_dinov2(state_dict)  # names only; kernel and grid as they are
        if args.patch_size is not None or args.img_size is not None:
            patch = args.patch_size or converted['patch_embed.projection.weight'].shape[-1]
            target = dict(patch_size=patch)
            if args.img_size is not None:
                size = args.img_size
                target['img_size'] = size if len(size) == 2 else size * 2  # H [W]
            converted = convert_dinov2(state_dict, target)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        print(f'dinov2_to_mmeomt: {error}', file=sys.stderr)
        return 1
    kernel = tuple(converted['patch_embed.projection.weight'].shape[-2:])
    positions = converted['pos_embed'].shape[1] if 'pos_embed' in converted else 0
    # mmengine's layout, written atomically: a killed conversion leaves no half-written file.
    atomic_torch_save(dict(state_dict=converted, meta=dict(
        converted_from=os.path.basename(args.src), source_format=fmt, source_prefix=prefix,
        patch_size=kernel, num_patch_positions=positions, mmeomt_version=__version__)), args.dst)
    print(f'dinov2_to_mmeomt: {args.src} ({fmt} format) -> {args.dst} ({len(converted)} keys, '
          f'{kernel[0]}x{kernel[1]} kernels, {positions} patch positions)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
