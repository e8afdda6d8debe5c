"""tools/analysis_tools/benchmark.py: times our core and transformers' EoMT in one run."""
import importlib.util
import json
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / 'tools' / 'analysis_tools' / 'benchmark.py'


def load_tool():
    spec = importlib.util.spec_from_file_location('benchmark', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reports_ours_masked_and_transformers(tmp_path, capsys):
    out = tmp_path / 'bench.json'
    results = load_tool().main(['--arch', 'small', '--img-size', '32', '--num-queries', '4',
                                '--warmup', '0', '--iters', '2', '--threads', '1', '--masked',
                                '--compare', 'transformers', '--json', str(out)])
    names = [r['name'] for r in results]
    assert names == ['mmeomt', 'mmeomt, masked attention on',
                     'transformers EomtForUniversalSegmentation']
    assert all(r['ms_per_image'] > 0 and r['fps'] > 0 for r in results)
    assert json.loads(out.read_text())['results'] == results
    assert 'ms/img' in capsys.readouterr().out


def test_rejects_an_image_size_off_the_patch_grid():
    with pytest.raises(SystemExit):
        load_tool().parse_args(['--img-size', '100'])
