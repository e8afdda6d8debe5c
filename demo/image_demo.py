"""Segment images with an EoMT model and write the visualisations as PNGs.

Examples::

    # a model-zoo name (weights downloaded once, cached per URL)
    python demo/image_demo.py demo.jpg eomt_vit-l_8xb2-12e_coco-panoptic-640 --out-dir outputs
    # a folder of images, a config and local weights, on the GPU
    python demo/image_demo.py images/ configs/eomt/eomt_vit-l_8xb2-31e_ade20k-semantic-512.py \\
        --weights pytorch_model.bin --device cuda:0
    # a large photo at its own resolution: overlapping crop-sized tiles, merged
    python demo/image_demo.py large.jpg eomt_vit-l_8xb2-12e_coco-panoptic-640 --tiled
    # the network from an ONNX export (tools/deployment/export_onnx.py), run by ONNX Runtime
    python demo/image_demo.py demo.jpg eomt_vit-l_8xb2-12e_coco-panoptic-640 \\
        --weights eomt_l_coco_panoptic_640.onnx --backend onnxruntime

One ``<image name>.png`` per image: panoptic segments in their class colours with class names,
instance masks with labels and scores, or semantic overlays with class names.
"""
import argparse
import sys

from mmeomt.apis import EoMTInferencer


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='EoMT inference on images, PNGs out.')
    parser.add_argument('inputs', help='an image or a folder of images')
    parser.add_argument('model', help='model-zoo name or alias (tools/download.py --list), '
                        'or a config file')
    parser.add_argument('--weights', default=None,
                        help='checkpoint path or URL (default: the model zoo\'s for a name); '
                        'with --backend onnxruntime an exported .onnx file')
    parser.add_argument('--backend', default='pytorch', choices=['pytorch', 'onnxruntime'],
                        help='what runs the network (pre- and post-processing are the same)')
    parser.add_argument('--providers', nargs='+', default=None,
                        help='ONNX Runtime execution providers in order, e.g. cuda cpu or '
                        'TensorrtExecutionProvider CUDAExecutionProvider (default: the CPU, or '
                        'CUDA for a GPU --device)')
    parser.add_argument('--out-dir', default='outputs', help='where the PNGs go')
    parser.add_argument('--device', default=None, help='e.g. cpu, cuda:0 (default: auto)')
    parser.add_argument('--metafile', default=None, help='model index to resolve names from')
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='instance models: draw instances scoring at least this')
    parser.add_argument('--opacity', type=float, default=0.5,
                        help='semantic models: opacity of the colour overlay')
    parser.add_argument('--skip-bad-images', action='store_true',
                        help='leave out (and list) images that cannot be read instead of stopping')
    parser.add_argument('--allow-pickle', action='store_true',
                        help='load a local checkpoint that holds more than tensors (a training '
                        'checkpoint such as work_dirs/.../iter_N.pth) by unpickling it in full; '
                        'only for files you trust')
    parser.add_argument('--tiled', action='store_true',
                        help='panoptic and instance models: segment large images in '
                        'overlapping crop-sized tiles at their own resolution, merged '
                        '(--batch-size counts tiles)')
    parser.add_argument('--tile-overlap', type=float, default=0.25,
                        help='with --tiled: fraction of a tile shared with its neighbour, '
                        'in [0, 1)')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    inferencer = EoMTInferencer(args.model, weights=args.weights, device=args.device,
                                metafile=args.metafile, allow_pickle=args.allow_pickle,
                                backend=args.backend, providers=args.providers)
    result = inferencer(args.inputs, out_dir=args.out_dir, batch_size=args.batch_size,
                        pred_score_thr=args.score_thr, opacity=args.opacity,
                        skip_bad_images=args.skip_bad_images, tiled=args.tiled,
                        tile_overlap=args.tile_overlap)
    for path in result['out_files']:
        print(path)
    for item in result['skipped']:
        print(f'skipped {item["input"]}: {item["reason"]}', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
