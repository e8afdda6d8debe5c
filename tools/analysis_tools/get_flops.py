"""FLOPs and parameters of an EoMT config's network on its inference path.

    python tools/analysis_tools/get_flops.py CONFIG [--shape H [W]] [--masked-attention]
                                             [--out FILE.json] [--show-table]
                                             [--cfg-options KEY=VALUE ...]

What is counted: one forward of the network (:class:`mmeomt.models.EoMT`: ViT, queries, mask
module) on a ``(1, 3, H, W)`` input, by default the config's crop (the backbone's ``img_size``),
in eval mode.  By default with every ``attn_mask_probs`` at 0, as after the mask annealing (the
released models): the intermediate mask modules are skipped.  ``--masked-attention`` sets them
to 1, which also runs a mask module before each of the last ``num_blocks`` blocks.  Semantic
models run the network once per window of an image (docs/method.md §6); pre-processing and
post-processing (resizing the masks to the image, panoptic/instance fusion) are not counted,
as in mmdet's and mmseg's ``get_flops``.

How: mmengine's ``FlopAnalyzer`` (fvcore's counter), which traces the model with
``torch.jit`` and counts the ops it has a formula for: linear layers, matmul/einsum,
convolutions (also transposed), layer norm, bilinear upsampling.  Convention: one fused
multiply-add is one FLOP (fvcore's), so the numbers are about half of a "2 x MACs" count.
mmengine has no formula for ``aten::scaled_dot_product_attention``, the attention of every block;
this tool adds one (``q @ k^T`` and ``attn @ v``: ``B * heads * N_q * N_k * (d_qk + d_v)``;
softmax, masking and dropout not counted, as fvcore counts no softmax).  Element-wise ops (GELU,
additions, softmax, ...) are not counted; their names are listed as ``uncounted_ops``.
"""
import argparse
import json
import os
import os.path as osp
import tempfile
from typing import Any, List, Optional, Tuple

import torch
from mmengine.config import Config, DictAction


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='FLOPs and parameters of an EoMT model (inference network)')
    parser.add_argument('config', help='config file')
    parser.add_argument('--shape', type=int, nargs='+', metavar='N',
                        help='input size: H W, or one value for a square (default: the '
                        "backbone's img_size, i.e. the config's crop)")
    parser.add_argument('--masked-attention', action='store_true',
                        help='count with attn_mask_probs at 1 (masked attention and the '
                        'intermediate mask modules on, as early in training) instead of 0')
    parser.add_argument('--out', help='also write the figures to this JSON file')
    parser.add_argument('--show-table', action='store_true',
                        help='print the per-module table of FLOPs and parameters')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, e.g. model.eomt.num_queries=100')
    return parser.parse_args(argv)


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """FLOPs of ``aten::scaled_dot_product_attention``: ``q (..., N_q, d)``, ``k (..., N_k,
    d)``, ``v (..., N_k, d_v)``; the two batched matrix products, one FLOP per multiply-add."""
    from mmengine.analysis.jit_handles import get_shape
    q, k, v = (get_shape(x) for x in inputs[:3])
    batch = 1
    for size in q[:-2]:
        batch *= size
    n_q, d = q[-2:]
    n_k, d_v = k[-2], v[-1]
    return batch * n_q * n_k * (d + d_v)


def build_network(cfg: Config) -> torch.nn.Module:
    """The :class:`~mmeomt.models.EoMT` core of the config's model, on the CPU, in eval mode."""
    from mmengine.registry import MODELS, init_default_scope

    import mmeomt  # noqa: F401  (registers the models)
    from mmeomt.models import EoMT
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model = MODELS.build(cfg.model)  # random weights: init_weights (downloads) is not needed
    cores = [m for m in model.modules() if isinstance(m, EoMT)]
    if len(cores) != 1:
        raise ValueError(f'{cfg.filename}: expected one mmeomt EoMT module in the model '
                         f'({type(model).__name__}), found {len(cores)}')
    return cores[0].eval()


def count(cfg: Config, shape: Optional[List[int]] = None,
          masked_attention: bool = False) -> Tuple[dict, Any, Any]:
    """FLOPs, parameters and activations of one forward (see the module docstring), and
    mmengine's ``FlopAnalyzer`` and ``ActivationAnalyzer`` that counted them (for the table)."""
    from mmengine.analysis import ActivationAnalyzer, FlopAnalyzer, parameter_count

    network = build_network(cfg)
    if shape is None:
        shape = list(network.backbone.img_size)
    elif len(shape) == 1:
        shape = [shape[0]] * 2
    if len(shape) != 2 or min(shape) < network.backbone.patch_size:
        raise ValueError(f'--shape takes H W (or one value), each at least the patch size '
                         f'{network.backbone.patch_size}, got {shape}')
    with torch.no_grad():
        network.attn_mask_probs.fill_(1.0 if masked_attention else 0.0)
    inputs = (torch.randn(1, 3, *shape), )

    flops = FlopAnalyzer(network, inputs).set_op_handle(
        'aten::scaled_dot_product_attention', sdpa_flop_jit)
    flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    flops.tracer_warnings('none')
    activations = ActivationAnalyzer(network, inputs)
    activations.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    activations.tracer_warnings('none')
    total = flops.total()
    result = dict(
        config=cfg.filename,
        input_shape=[1, 3, *shape],
        masked_attention=masked_attention,
        flops=total,
        gflops=total / 1e9,
        params=parameter_count(network)[''],
        activations=activations.total(),
        flops_by_operator=dict(flops.by_operator()),
        uncounted_ops=dict(flops.unsupported_ops()))
    return result, flops, activations


def write_json(path: str, result: dict) -> None:
    """``result`` to ``path``, atomically (temp file in the same folder + ``os.replace``)."""
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.get_flops.', suffix='.json')
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            json.dump(result, f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    result, flops, activations = count(cfg, args.shape, args.masked_attention)
    if args.show_table:
        from mmengine.analysis import complexity_stats_table
        print(complexity_stats_table(flops=flops, activations=activations,
                                     show_param_shapes=False, max_depth=3))
    h, w = result['input_shape'][2:]
    mode = 'with masked attention' if args.masked_attention else 'after mask annealing'
    print(f'Input shape: (1, 3, {h}, {w}), {mode}')
    print(f'FLOPs: {result["gflops"]:.4g} G (one multiply-add = one FLOP; scaled dot-product '
          f'attention included)')
    print(f'Params: {result["params"] / 1e6:.4g} M')
    print(f'Not counted (element-wise ops): {", ".join(sorted(result["uncounted_ops"]))}')
    if args.out:
        write_json(args.out, result)
        print(f'Written to {args.out}')
    return result


if __name__ == '__main__':
    main()
