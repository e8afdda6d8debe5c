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


MAIN_JOB = 'configs/eomt/synthetic/eomt_vit-t_synthetic-panoptic.py'
REPO = TOOL.parents[2]


@pytest.fixture
def in_synthetic_workdir(tmp_path, monkeypatch):
    """A working directory whose data/synthetic holds a small synthetic dataset, where the main
    job's config (data paths relative to the working directory) finds its data."""
    from mmeomt.datasets.synthetic import generate_synthetic_dataset
    generate_synthetic_dataset(str(tmp_path / 'data' / 'synthetic'), num_train=8, num_val=2,
                               seed=0)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_config_train_step_in_process_and_per_checkout(in_synthetic_workdir, capsys):
    options = ['--warmup', '0', '--iters', '1', '--threads', '1']
    result = load_tool().main(['--config', str(REPO / MAIN_JOB)] + options)
    assert result['ms'] > 0 and result['peak_rss_mib'] > 0
    assert Path(result['code']) == REPO
    # --code: one process per checkout (here this one), importing that checkout's mmeomt.
    out = in_synthetic_workdir / 'code.json'
    result = load_tool().main(['--config', MAIN_JOB, '--code', str(REPO), '--rounds', '1',
                               '--json', str(out)] + options)
    assert json.loads(out.read_text())['ms'] == result['ms']
    (run, ) = result['runs'][str(REPO)]
    assert Path(run['code']) == REPO and run['ms'] == result['ms'][str(REPO)] > 0
    assert '1.00x' in capsys.readouterr().out


def test_config_mode_rejects_a_checkout_without_mmeomt(tmp_path):
    tool = load_tool()
    with pytest.raises(SystemExit, match='no mmeomt package'):
        tool.main(['--config', MAIN_JOB, '--code', str(tmp_path), '--rounds', '1'])
    with pytest.raises(SystemExit):
        tool.parse_args(['--code', str(tmp_path)])  # --code needs --config
