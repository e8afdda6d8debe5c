"""Inference speed of the EoMT core, and of transformers' EoMT on the same machine in the same run.

Times the network forward of one image batch (random weights, masked attention off as at
inference: the intermediate mask modules are skipped), after warm-up, and prints ms per image
and images per second.  ``--compare transformers`` builds ``EomtForUniversalSegmentation`` of the
same size from ``.venv/reference`` in a subprocess (transformers must not share a process with
mmpretrain) and times it the same way, so the two figures are comparable as a ratio even on a
shared, noisy machine.  ``--masked`` also times our model with masked attention on (every block
at probability 1): the cost EoMT avoids at inference.  ``--onnx`` exports the same weights to
ONNX (``mmeomt.deployment``, into a temporary folder) and times ONNX Runtime (CPU execution
provider, the backend's session options: all graph optimisations, as many intra-op threads as
torch) beside PyTorch fp32 and bfloat16 autocast, in the same run.

Subcommands (a first argument naming one, see :data:`SUBCOMMANDS`) run other benchmarks:
``e2e`` times image file -> segments per stage (``e2e_benchmark.py``), ``train`` a full training
step phase by phase (``train_benchmark.py``).

Examples::

    python tools/analysis_tools/benchmark.py --arch small --img-size 640 --compare transformers
    python tools/analysis_tools/benchmark.py --arch large --device cuda --amp --batch-size 8
    python tools/analysis_tools/benchmark.py --arch small --img-size 640 --onnx
    python tools/analysis_tools/benchmark.py e2e --task panoptic --amp
    python tools/analysis_tools/benchmark.py train --compare-old-loss --compare-old-optim
"""
import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

REPO = Path(__file__).resolve().parents[2]
REFERENCE_DIR = REPO / '.venv' / 'reference'
NUM_BLOCKS = {'small': 3, 'base': 3, 'large': 4, 'giant': 5}
# Subcommand -> module beside this file whose ``main(argv)`` takes the remaining arguments.
SUBCOMMANDS = {'e2e': 'e2e_benchmark', 'train': 'train_benchmark'}


def time_forward(forward: Callable[[torch.Tensor], object], images: torch.Tensor, warmup: int,
                 iters: int) -> List[float]:
    """Seconds per call of ``forward(images)``, ``iters`` calls after ``warmup``."""
    cuda = images.is_cuda
    times = []
    with torch.inference_mode():
        for i in range(warmup + iters):
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            forward(images)
            if cuda:
                torch.cuda.synchronize()
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return times


def summary(name: str, times: List[float], batch_size: int) -> Dict[str, float]:
    times = sorted(times)
    median = times[len(times) // 2]
    return dict(name=name, ms_per_image=1000 * median / batch_size,
                fps=batch_size / median, min_ms_per_image=1000 * times[0] / batch_size)


def build_ours(args) -> torch.nn.Module:
    from mmeomt.models import EoMT
    model = EoMT(
        backbone=dict(type='mmeomt.EoMTViT', arch=args.arch, img_size=args.img_size),
        num_classes=args.num_classes, num_queries=args.num_queries,
        num_blocks=NUM_BLOCKS[args.arch])
    return model.eval()


# Runs in the reference environment; prints one JSON line with the per-call times.
HF_SCRIPT = '''
import json, sys, time, torch
from transformers import EomtConfig, EomtForUniversalSegmentation
args = json.loads(sys.argv[1])
sys.path.insert(0, args['tools'])
from benchmark import time_forward
torch.set_num_threads(args['threads'])
sizes = {'small': (384, 12, 6), 'base': (768, 12, 12), 'large': (1024, 24, 16),
         'giant': (1536, 40, 24)}
dims, depth, heads = sizes[args['arch']]
config = EomtConfig(hidden_size=dims, num_hidden_layers=depth, num_attention_heads=heads,
                    mlp_ratio=4, image_size=args['img_size'], patch_size=16,
                    num_blocks=args['num_blocks'], num_queries=args['num_queries'],
                    num_labels=args['num_classes'], use_swiglu_ffn=args['arch'] == 'giant')
model = EomtForUniversalSegmentation(config).eval().to(args['device'])
model.attn_mask_probs.zero_()
images = torch.randn(args['batch_size'], 3, args['img_size'], args['img_size'],
                     device=args['device'])
def forward(x):
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=args['amp']):
        return model(pixel_values=x)
print(json.dumps(time_forward(forward, images, args['warmup'], args['iters'])))
'''


def reference_env() -> Dict[str, str]:
    """Environment of a subprocess that imports transformers from ``.venv/reference``."""
    if not REFERENCE_DIR.is_dir():
        raise SystemExit(f'--compare transformers needs {REFERENCE_DIR} (run `make setup`)')
    return dict(os.environ, PYTHONPATH=str(REFERENCE_DIR), HF_HUB_OFFLINE='1',
                TRANSFORMERS_OFFLINE='1', TRANSFORMERS_VERBOSITY='error')


def run_json(command: List[str], env: Optional[Dict[str, str]] = None):
    """Run ``command`` and return the JSON of its last stdout line.

    Raises:
        RuntimeError: it failed; the message ends with its stderr.
    """
    out = subprocess.run(command, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f'exit {out.returncode}:\n{out.stderr[-3000:]}')
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_transformers(args) -> List[float]:
    spec = dict(vars(args), num_blocks=NUM_BLOCKS[args.arch],
                tools=str(Path(__file__).resolve().parent))
    env = reference_env()
    with tempfile.NamedTemporaryFile('w', suffix='.py', delete=False) as f:
        f.write(HF_SCRIPT)
    try:
        return run_json([sys.executable, f.name, json.dumps(spec)], env=env)
    except RuntimeError as error:
        raise SystemExit(f'transformers benchmark failed:\n{error}') from None
    finally:
        os.remove(f.name)


def time_pytorch_and_onnx(model: torch.nn.Module, images: torch.Tensor,
                          args) -> List[Dict[str, float]]:
    """PyTorch fp32, bf16 autocast and ONNX Runtime (per opset) on the same weights, interleaved
    round by round so that a change of machine load hits every row alike."""
    from mmeomt.deployment import DEFAULT_OPSET, export_core, make_session
    from mmeomt.deployment.metadata import INPUT_NAME
    device = images.device.type
    rows = {'mmeomt fp32': lambda x: model(x)}

    def bf16(x):
        with torch.autocast(device, dtype=torch.bfloat16):
            return model(x)

    rows['mmeomt bf16 autocast'] = bf16
    providers = ['CUDAExecutionProvider'] if device == 'cuda' else ['CPUExecutionProvider']
    with tempfile.TemporaryDirectory(prefix='eomt_onnx_') as tmp:
        for opset in args.opset or [DEFAULT_OPSET]:
            path = os.path.join(tmp, f'eomt_opset{opset}.onnx')
            diffs = export_core(model.cpu(), path, (args.img_size, args.img_size), opset=opset)[0]
            print(f'opset {opset}: ONNX Runtime vs PyTorch max abs diff: mask logits '
                  f'{diffs["mask_logits"]:.2g}, class logits {diffs["class_logits"]:.2g}')
            session = make_session(path, providers=providers, num_threads=args.threads)
            rows[f'onnxruntime fp32, opset {opset} ({session.get_providers()[0]})'] = \
                lambda x, s=session: s.run(None, {INPUT_NAME: x.cpu().numpy()})
        model.to(images.device)
        times = {name: [] for name in rows}
        for name, forward in rows.items():  # warm-up
            time_forward(forward, images, args.warmup, 1)
        for _ in range(args.iters):
            for name, forward in rows.items():
                times[name] += time_forward(forward, images, 0, 1)
    return [summary(name, t, args.batch_size) for name, t in times.items()]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--arch', default='small', choices=sorted(NUM_BLOCKS))
    parser.add_argument('--img-size', type=int, default=640)
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument('--num-queries', type=int, default=200)
    parser.add_argument('--num-classes', type=int, default=133)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    parser.add_argument('--amp', action='store_true', help='bfloat16 autocast')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--masked', action='store_true',
                        help='also time masked attention on (probability 1 in every block)')
    parser.add_argument('--compare', choices=['transformers'], default=None)
    parser.add_argument('--onnx', action='store_true',
                        help='also time ONNX Runtime on the same weights, and PyTorch in both '
                        'fp32 and bf16 autocast (then --amp only sets the transformers run)')
    parser.add_argument('--opset', type=int, nargs='+', default=None,
                        help='--onnx: the opsets to export and time (default: the exporter\'s '
                        'default)')
    parser.add_argument('--json', help='also write the results to this JSON file')
    args = parser.parse_args(argv)
    if args.img_size % 16:
        parser.error(f'--img-size must be a multiple of the patch size 16, got {args.img_size}')
    return args


def main(argv=None):
    """The forward benchmark, or the subcommand named by the first argument."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in SUBCOMMANDS:
        tools = str(Path(__file__).resolve().parent)
        if tools not in sys.path:
            sys.path.insert(0, tools)
        return importlib.import_module(SUBCOMMANDS[argv[0]]).main(argv[1:])
    return forward_main(argv)


def forward_main(argv=None) -> List[Dict[str, float]]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_ours(args).to(args.device)
    images = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=args.device)

    def forward(x):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=args.amp):
            return model(x)

    results = []
    model.attn_mask_probs.zero_()
    if args.onnx:
        results += time_pytorch_and_onnx(model, images, args)
    else:
        results.append(summary('mmeomt', time_forward(forward, images, args.warmup, args.iters),
                               args.batch_size))
    if args.masked:
        model.attn_mask_probs.fill_(1.0)
        results.append(summary('mmeomt, masked attention on',
                               time_forward(forward, images, args.warmup, args.iters),
                               args.batch_size))
    if args.compare == 'transformers':
        results.append(summary('transformers EomtForUniversalSegmentation',
                               time_transformers(args), args.batch_size))

    precision = 'fp32 / bf16 / ONNX Runtime' if args.onnx else \
        'bf16 autocast' if args.amp else 'fp32'
    print(f'EoMT-{args.arch[0].upper()} {args.img_size}x{args.img_size}, batch '
          f'{args.batch_size}, {args.device} ({args.threads} threads), {precision}, median of '
          f'{args.iters}:')
    base = results[0]['ms_per_image']
    width = max(45, *(len(r['name']) for r in results))
    for r in results:
        print(f'  {r["name"]:<{width}} {r["ms_per_image"]:9.1f} ms/img  {r["fps"]:8.2f} img/s  '
              f'x{r["ms_per_image"] / base:.2f}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(args=vars(args), results=results), f, indent=2)
    return results


if __name__ == '__main__':
    main()
