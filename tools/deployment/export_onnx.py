"""Export an EoMT model to ONNX: the network at inference, normalised images -> logits.

The graph maps ``inputs (B, 3, H, W)`` float32 (the data preprocessor's output: BGR -> RGB,
``(x - mean) / std``, padded as the test pipeline pads) to the final prediction set,
``mask_logits (B, Q, H/4, W/4)`` and ``class_logits (B, Q, C + 1)``.  Masked attention is not
part of it (the released models annealed it away), nor is anything before or after the network:
run the file with ``EoMTInferencer(config, weights='model.onnx', backend='onnxruntime')`` (or
``demo/image_demo.py --backend onnxruntime``) for the same pipeline and post-processing as in
PyTorch.  Class names, normalisation, crop, task and the input sizes it takes are in the file's
metadata.

Examples::

    # the model zoo's weights (downloaded once), fixed 640 x 640 input, any batch size
    python tools/deployment/export_onnx.py eomt_vit-l_8xb2-12e_coco-panoptic-640 \\
        --out eomt_l_coco_panoptic_640.onnx
    # a config and a checkpoint in any format mmeomt loads; any H, W multiple of 16; fp16
    python tools/deployment/export_onnx.py \\
        configs/eomt/eomt_vit-l_8xb2-31e_ade20k-semantic-512.py pytorch_model.bin \\
        --out ade20k_semantic.onnx --dynamic-size --fp16

The file is checked with ``onnx.checker`` and run once with ONNX Runtime beside PyTorch on a
random input; the max abs difference of both outputs is printed.  It is written atomically:
after an error there is no (half-written) file.
"""
import argparse
import json
import sys
import warnings
from pathlib import Path

from mmeomt.deployment import DEFAULT_OPSET, export_from_config


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='config file or model-zoo name')
    parser.add_argument('checkpoint', nargs='?', default=None,
                        help='checkpoint path or URL, in any format mmeomt loads (default: the '
                        "model zoo's for a name; random weights for a config)")
    parser.add_argument('--out', required=True, help='the .onnx file to write')
    parser.add_argument('--input-size', type=int, nargs='+', metavar='N',
                        help='H [W] of the example input and, unless --dynamic-size, the only '
                        "size the file takes (default: what the config's test pipeline feeds "
                        'the network: the crop, or the semantic window)')
    parser.add_argument('--dynamic-size', action='store_true',
                        help='take any H, W that are multiples of the patch size (16); '
                        'needs opset >= 18')
    parser.add_argument('--static-batch', type=int, metavar='B', default=None,
                        help='take exactly B images per run (default: any batch size)')
    parser.add_argument('--opset', type=int, default=DEFAULT_OPSET,
                        help=f'ONNX opset (default {DEFAULT_OPSET}; 17 works at the training '
                        'crop, where the position embeddings need no resize)')
    parser.add_argument('--fp16', action='store_true',
                        help='float16 weights and arithmetic (float32 inputs and outputs)')
    parser.add_argument('--json', help='also write the report (metadata, differences) here')
    args = parser.parse_args(argv)
    if args.input_size is not None and len(args.input_size) not in (1, 2):
        parser.error(f'--input-size takes H or H W, got {args.input_size}')
    if args.static_batch is not None and args.static_batch < 1:
        parser.error(f'--static-batch must be >= 1, got {args.static_batch}')
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    size = None if args.input_size is None else (
        args.input_size * 2 if len(args.input_size) == 1 else args.input_size)
    with warnings.catch_warnings():
        if args.checkpoint is None:  # said once below, not as a warning among the exporter's
            warnings.filterwarnings('ignore', 'No weights given')
        try:
            report = export_from_config(
                args.config, args.checkpoint, args.out, input_size=size,
                dynamic_batch=args.static_batch is None, dynamic_size=args.dynamic_size,
                batch_size=args.static_batch or 1, opset=args.opset, fp16=args.fp16)
        except (ValueError, TypeError, FileNotFoundError, ImportError, RuntimeError) as error:
            print(f'export_onnx: error: {error}', file=sys.stderr)
            print(f'export_onnx: nothing written to {args.out}', file=sys.stderr)
            return 1
    meta = report['metadata']
    weights = args.checkpoint or ('random weights' if Path(args.config).is_file() else
                                  "the model zoo's weights")
    print(f'wrote {report["path"]} ({meta["task"]}, {meta["num_classes"]} classes, '
          f'{meta["num_queries"]} queries, {meta["precision"]}, {weights})')
    size_text = ('any H, W multiple of %d' % meta['size_divisor']
                 if meta['input_size'] == 'dynamic' else 'x'.join(map(str, meta['input_size'])))
    print(f'  inputs (B, 3, H, W): {size_text}; batch {meta["batch_size"]}')
    for entry in report['max_abs_diff']:
        print(f'  ONNX Runtime vs PyTorch (fp32), input {tuple(entry["input_shape"])}: max abs '
              f'diff mask_logits {entry["mask_logits"]:.3g}, class_logits '
              f'{entry["class_logits"]:.3g}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
