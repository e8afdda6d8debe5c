"""tools/analysis_tools/train_benchmark.py: one training step timed phase by phase."""
import importlib.util
import json
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / 'tools' / 'analysis_tools' / 'train_benchmark.py'
TINY = ['--img-size', '32', '--batch-size', '2', '--num-queries', '4', '--num-points', '16',
        '--num-targets', '3', '--warmup', '1', '--iters', '2', '--threads', '1']


def load_tool():
    spec = importlib.util.spec_from_file_location('train_benchmark', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_breakdown_of_current_old_loss_and_old_optimiser(tmp_path, capsys):
    out = tmp_path / 'train.json'
    result = load_tool().main(TINY + ['--compare-old-loss', '--compare-old-optim', '--json',
                                      str(out)])
    assert json.loads(out.read_text()) == result
    # Both flags also time the code before both changes (old loss and old optimiser).
    assert list(result['ms']) == ['current', 'old loss', 'old optimiser', 'old loss+optim']
    for ms in result['ms'].values():
        assert set(ms) == {'total', 'forward', 'forward.mask_module', 'forward.blocks',
                           'forward.final_predict', 'forward.other', 'targets', 'loss',
                           'backward', 'optimiser'}
        assert all(ms[k] > 0 for k in ms if k != 'forward.other')
        # The parts of the forward lie inside it; the phases inside the step.
        assert ms['forward.mask_module'] + ms['forward.blocks'] < ms['forward']
        assert ms['forward'] + ms['loss'] + ms['backward'] < ms['total']
    # Same seeds, same model: the per-image loss gives the batched loss's value (the optimiser
    # variant took fused-vs-loop steps, equal to float rounding).
    losses = result['loss']
    assert losses['old loss'] == losses['current']
    assert losses['old optimiser'] == pytest.approx(losses['current'], rel=1e-4)
    assert losses['old loss+optim'] == pytest.approx(losses['current'], rel=1e-4)
    assert result['peak_rss_mib'] > 0
    printed = capsys.readouterr().out
    for label in ('total', 'mask module', 'blocks', 'optimiser', 'old loss / current',
                  'ru_maxrss'):
        assert label in printed


def test_masked_probability_and_amp_run(tmp_path):
    result = load_tool().main(TINY + ['--masked-prob', '0', '--amp', '--iters', '1'])
    assert list(result['ms']) == ['current']
    # In training the mask module runs before every masked block whatever the probability
    # (its predictions are supervised).
    assert result['ms']['current']['forward.mask_module'] > 0
    assert result['args']['amp'] and result['args']['masked_prob'] == 0


def test_rejects_bad_arguments():
    tool = load_tool()
    for argv in (['--img-size', '100'], ['--masked-prob', '1.5'], ['--num-stuff', '8']):
        with pytest.raises(SystemExit):
            tool.parse_args(argv)
