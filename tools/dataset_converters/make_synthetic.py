"""Write the synthetic shapes dataset (COCO panoptic + instance, ADE20K-style semantic).

    python tools/dataset_converters/make_synthetic.py --out data/synthetic

Idempotent: if ``--out`` already holds the dataset for the same parameters and generator
version (``manifest.json``), nothing is written.  See ``mmeomt/datasets/synthetic/``.
"""
import argparse
import json
import time

from mmeomt.datasets.synthetic import generate_synthetic_dataset


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='data/synthetic', help='dataset root')
    parser.add_argument('--num-train', type=int, default=400, help='training images')
    parser.add_argument('--num-val', type=int, default=100, help='validation images')
    parser.add_argument('--seed', type=int, default=0, help='fixes every byte written')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    manifest = generate_synthetic_dataset(args.out, num_train=args.num_train,
                                          num_val=args.num_val, seed=args.seed)
    seconds = time.perf_counter() - start
    print(f'{args.out}: {json.dumps(manifest["params"])} ({seconds:.1f} s)')
    for split, stats in manifest['stats'].items():
        print(f'  {split}: {stats["images"]} images, {stats["thing_instances"]} instances '
              f'({stats["instances_per_image"]} per image), {stats["crowd_regions"]} crowd regions')
    return manifest


if __name__ == '__main__':
    main()
