"""Shared by the reliability tests: a tiny synthetic dataset, configs pointing at it, and
training subprocesses run through tools/train.py and tools/dist_train.sh."""
import json
import os
import os.path as osp
import signal
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional

import torch

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(osp.dirname(HERE))
TINY_PANOPTIC = osp.join(HERE, 'configs', 'tiny_panoptic.py')


def write_config(path: str, data_root: str, base: str = TINY_PANOPTIC,
                 record_dir: Optional[str] = None, kill_after: Optional[int] = None,
                 extra: str = '') -> str:
    """A config at ``path`` inheriting ``base`` with its data under ``data_root`` (the
    generator's layout) and, with ``record_dir``, the losses of every iteration recorded.

    ``extra`` is appended: it may assign other keys, or change the loaders in place (e.g.
    ``train_dataloader.update(num_workers=0)``), which assigning them anew would not.
    """
    coco = osp.join(data_root, 'coco', '')
    lines = [
        f'_base_ = [{base!r}]',
        f'data_root = {coco!r}',
        'train_dataloader = dict(dataset=dict(data_root=data_root))',
        'val_dataloader = dict(dataset=dict(data_root=data_root))',
        'test_dataloader = val_dataloader',
        "val_evaluator = dict(ann_file=data_root + 'annotations/panoptic_val2017.json',",
        "                     seg_prefix=data_root + 'annotations/panoptic_val2017/')",
        'test_evaluator = val_evaluator',
    ]
    if record_dir is not None:
        lines += [
            "custom_imports = dict(imports=['mmeomt', 'reliability_hooks'],",
            '                      allow_failed_imports=False)',
            f'custom_hooks = [dict(type=\'RecordLossesHook\', out_dir={record_dir!r}, '
            f'kill_after={kill_after!r})]',
        ]
    with open(path, 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines) + '\n' + extra)
    return path


def tool_env(threads: int = 1) -> Dict[str, str]:
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([HERE, ROOT] + (
        [env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    env['OMP_NUM_THREADS'] = str(threads)
    env['PYTHONHASHSEED'] = '0'
    return env


def run_tool(args: List[str], timeout: float = 300, threads: int = 1,
             env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    """``python tools/<args>`` (or ``bash tools/<script>.sh``) in a subprocess of its own
    session; stdout and stderr are returned.

    Output goes through files, not pipes, and the whole session is killed once the tool has
    exited: a tool that was SIGKILLed leaves its data-loader workers behind (torch's workers
    notice a dead parent only while idle), and they must neither keep a pipe open nor outlive
    the test.
    """
    if args[0].endswith('.sh'):
        command = ['bash', osp.join(ROOT, 'tools', args[0])] + args[1:]
    else:
        command = [sys.executable, osp.join(ROOT, 'tools', args[0])] + args[1:]
    with tempfile.TemporaryFile('w+') as out, tempfile.TemporaryFile('w+') as err:
        process = subprocess.Popen(command, cwd=ROOT, env=env or tool_env(threads), stdout=out,
                                   stderr=err, text=True, start_new_session=True)
        try:
            returncode = process.wait(timeout=timeout)
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:  # the session is gone already
                pass
            process.wait()
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(command, returncode, out.read(), err.read())


def read_losses(record_dir: str, rank: int = 0) -> Dict[int, dict]:
    """``{iteration: record}`` from RecordLossesHook (a later record of an iteration, from a
    resumed run, replaces an earlier one)."""
    records = {}
    with open(osp.join(record_dir, f'losses_rank{rank}.jsonl'), encoding='utf-8') as f:
        for line in f:
            record = json.loads(line)
            records[record['iter']] = record
    return records


def noise_everywhere_checkpoint(config: str, path: str) -> str:
    """Weights of the tiny model whose every query predicts the stuff class 'noise' with one
    mask: a prediction the panoptic metric scores above zero on the synthetic scenes where
    noise covers most of the image (three of the first five training scenes)."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    from mmeomt.datasets.synthetic import CLASSES
    from mmeomt.registry import MODELS

    cfg = Config.fromfile(config)
    init_default_scope(cfg.default_scope)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    core = model.eomt
    with torch.no_grad():
        core.class_head.weight.zero_()
        core.class_head.bias.fill_(-10.0)
        core.class_head.bias[CLASSES.index('noise')] = 10.0
        core.mask_head[-1].weight.zero_()
        core.mask_head[-1].bias.fill_(10.0)
        core.attn_mask_probs.zero_()
    torch.save(dict(state_dict=model.state_dict()), path)
    return path
