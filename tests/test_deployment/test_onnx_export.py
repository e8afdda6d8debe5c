"""ONNX export of the EoMT core (mmeomt.deployment.export, tools/deployment/export_onnx.py).

What it promises:
* the file is the core at inference: normalised images -> final mask logits (B, Q, H/4, W/4)
  and class logits (B, Q, C + 1), ONNX Runtime within 1e-4 of PyTorch (fp32), for any batch size
  by default and, with ``dynamic_size``, any H, W multiple of the patch (the position embeddings
  resized inside the graph as PyTorch resizes them); a fixed-size file takes one size;
* it passes onnx.checker and carries task, classes, palette, normalisation, crop and the inputs
  it takes in its metadata; float16 keeps float32 inputs and outputs;
* what would not compute as PyTorch does is refused with a clear error before anything is
  written -- training mode, masked attention still on, an input size the graph cannot take, a
  low opset, a checkpoint that does not fit -- and a failure at any later step leaves neither
  the .onnx file nor a temporary behind (an existing file stays as it was).
"""
import importlib
import json

import numpy as np
import pytest
import torch

onnx = pytest.importorskip('onnx')
pytest.importorskip('onnxruntime')
pytest.importorskip('onnxscript')

from deploy_helpers import TESTS, make_model, save_checkpoint, task_config  # noqa: E402
from mmeomt.deployment import export_core, export_onnx, make_session  # noqa: E402
from mmeomt.deployment import export as export_module  # noqa: E402
from mmeomt.deployment.metadata import METADATA_KEYS, decode_metadata, require  # noqa: E402


def tool():
    spec = importlib.util.spec_from_file_location(
        'export_onnx', TESTS.parent / 'tools' / 'deployment' / 'export_onnx.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference(core, x):
    with torch.no_grad():
        mask_logits, class_logits = core(x)
    return mask_logits[-1].numpy(), class_logits[-1].numpy()


def max_diff(session, core, x):
    got = session.run(None, {'inputs': x.numpy()})
    want = reference(core, x)
    assert [g.shape for g in got] == [w.shape for w in want]
    return max(float(np.abs(g - w).max()) for g, w in zip(got, want))


def leftovers(folder, name):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(('.' + name, name)))


def test_the_tool_writes_a_checked_file_with_its_metadata(exported, capsys):
    cfg_file, checkpoint, onnx_file, report_file = exported('panoptic')
    model = onnx.load(str(onnx_file))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 18
    meta = decode_metadata({p.key: p.value for p in model.metadata_props})
    assert set(meta) == set(METADATA_KEYS)
    assert meta['task'] == 'panoptic'
    assert meta['classes'] == ['circle', 'square', 'triangle', 'star', 'cross', 'stripes',
                               'checker', 'noise']
    assert meta['mean'] == [123.675, 116.28, 103.53] and meta['std'] == [58.395, 57.12, 57.375]
    assert meta['bgr_to_rgb'] is True
    assert meta['crop'] == [64, 64] and meta['input_size'] == [64, 64]
    assert meta['batch_size'] == 'dynamic' and meta['precision'] == 'fp32'
    assert (meta['num_classes'], meta['num_queries']) == (8, 10)
    inputs = [(i.name, [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim])
              for i in model.graph.input]
    assert inputs == [('inputs', ['batch', 3, 64, 64])]
    assert [o.name for o in model.graph.output] == ['mask_logits', 'class_logits']

    report = json.loads(report_file.read_text())
    assert report['path'] == str(onnx_file)
    assert [entry['input_shape'] for entry in report['max_abs_diff']] == [[1, 3, 64, 64]]
    assert 0 <= report['max_abs_diff'][0]['mask_logits'] <= 1e-4


@pytest.mark.parametrize('task', ['panoptic', 'semantic'])
def test_fp32_logits_match_pytorch_for_any_batch_size(exported, task):
    _, checkpoint, onnx_file, _ = exported(task)
    core = make_model(task).eomt  # the same seed: the weights of the checkpoint
    session = make_session(str(onnx_file))
    for batch in (1, 3):
        x = torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(batch))
        assert max_diff(session, core, x) <= 1e-4


def test_dynamic_size_takes_multiples_of_the_patch_as_pytorch_resizes(tmp_path):
    model = make_model('semantic')
    out = tmp_path / 'dynamic.onnx'
    report = export_onnx(model, out, dynamic_size=True)
    assert report['metadata']['input_size'] == 'dynamic'
    assert [e['input_shape'] for e in report['max_abs_diff']] == [[1, 3, 64, 64], [1, 3, 80, 96]]
    session = make_session(str(out))
    # the training grid (no resize in PyTorch), smaller, larger, non-square, one patch
    for h, w in [(64, 64), (32, 48), (128, 96), (16, 16), (48, 160)]:
        x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(h * w))
        assert max_diff(session, model.eomt, x) <= 1e-4, (h, w)


def test_a_fixed_size_other_than_the_crop_has_the_resized_grid_built_in(tmp_path):
    model = make_model('panoptic')
    state = {k: v.clone() for k, v in model.state_dict().items()}
    out = tmp_path / 'fixed96.onnx'
    report = export_onnx(model, out, input_size=(96, 80))
    assert report['metadata']['input_size'] == [96, 80]
    # the PyTorch model is left as it was
    assert model.eomt.masked_attn_enabled is True and not model.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    session = make_session(str(out))
    x = torch.randn(2, 3, 96, 80, generator=torch.Generator().manual_seed(0))
    assert max_diff(session, model.eomt, x) <= 1e-4
    with pytest.raises(Exception, match='(?i)dimension|shape'):
        session.run(None, {'inputs': torch.zeros(1, 3, 64, 64).numpy()})


def test_fp16_weights_keep_float32_inputs_and_outputs(tmp_path):
    model = make_model('panoptic')
    out = tmp_path / 'fp16.onnx'
    report = export_onnx(model, out, fp16=True)
    assert report['metadata']['precision'] == 'fp16'
    file = onnx.load(str(out))
    weights = [t for t in file.graph.initializer if t.data_type in (onnx.TensorProto.FLOAT,
                                                                     onnx.TensorProto.FLOAT16)]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    elem = [v.type.tensor_type.elem_type for v in [*file.graph.input, *file.graph.output]]
    assert elem == [onnx.TensorProto.FLOAT] * 3
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    got = make_session(str(out)).run(None, {'inputs': x.numpy()})
    for g, w in zip(got, reference(model.eomt, x)):
        assert np.abs(g - w).max() <= 0.02 * max(1.0, np.abs(w).max())
    # the PyTorch model itself is left in float32
    assert all(p.dtype == torch.float32 for p in model.parameters())


# ------------------------------------------------------------------------------------------
# Refused before anything is written
# ------------------------------------------------------------------------------------------
def test_training_mode_is_refused(tmp_path):
    model = make_model('panoptic').train()
    with pytest.raises(ValueError, match='training mode.*model.eval'):
        export_onnx(model, tmp_path / 'm.onnx')
    assert list(tmp_path.iterdir()) == []


def test_masked_attention_still_on_is_refused(tmp_path):
    model = make_model('panoptic')
    model.eomt.attn_mask_probs.copy_(torch.tensor([0.0, 0.3]))
    with pytest.raises(ValueError, match=r'masked attention is still on.*0\.3.*blocks \[3\]'):
        export_onnx(model, tmp_path / 'm.onnx')
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('kwargs,message', [
    (dict(input_size=(8, 64)), 'smaller than one 16x16 patch'),
    (dict(input_size=(72, 64), dynamic_size=True), 'multiples of the patch size 16'),
    (dict(dynamic_size=True, opset=17), 'opset >= 18'),
    (dict(input_size=96, opset=17), r'input size \(96, 96\) needs the position embeddings'),
    (dict(opset=16), 'opset 16 is too low'),
    (dict(input_size=(64.0, 64)), r'\(H, W\) ints'),
])
def test_unsupported_sizes_and_opsets_are_refused(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        export_onnx(make_model('panoptic'), tmp_path / 'm.onnx', **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_that_does_not_fit_fails_in_the_tool(tmp_path, capsys):
    state = make_model('panoptic').state_dict()
    state['eomt.class_head.weight'] = state['eomt.class_head.weight'][:5]
    del state['eomt.queries.weight']
    checkpoint = tmp_path / 'bad.pth'
    torch.save(dict(state_dict=state), checkpoint)
    cfg_file = tmp_path / 'tiny.py'
    task_config('panoptic').dump(str(cfg_file))
    out = tmp_path / 'out' / 'm.onnx'
    assert tool().main([str(cfg_file), str(checkpoint), '--out', str(out)]) == 1
    err = capsys.readouterr().err
    assert 'does not fit the model' in err and 'eomt.queries.weight' in err
    assert 'eomt.class_head.weight: (5, 64) vs (9, 64)' in err
    assert f'nothing written to {out}' in err
    assert not out.exists()


@pytest.fixture(scope='module')
def program():
    """A real export of the tiny core, handed out by a stub of torch.onnx.export: the tests of
    what happens after the export step need no export of their own."""
    core = make_model('panoptic').eomt
    core = export_module.copy.copy(core)
    core.masked_attn_enabled = False
    return torch.onnx.export(export_module.FinalPrediction(core).eval(),
                             (torch.randn(2, 3, 64, 64), ), dynamo=True, opset_version=18,
                             input_names=['inputs'], output_names=['mask_logits', 'class_logits'],
                             dynamic_shapes=({0: torch.export.Dim('batch', min=1)}, ),
                             verbose=False)


@pytest.fixture
def quick_export(monkeypatch, program):
    monkeypatch.setattr(export_module.torch.onnx, 'export', lambda *args, **kwargs: program)


def test_a_failure_after_writing_leaves_no_file_and_no_temporary(tmp_path, monkeypatch,
                                                                 quick_export):
    model = make_model('panoptic')
    out = tmp_path / 'm.onnx'
    out.write_bytes(b'the previous export')

    def broken(*args, **kwargs):
        raise RuntimeError('ONNX Runtime could not start')

    monkeypatch.setattr('mmeomt.deployment.runtime.make_session', broken)
    with pytest.raises(RuntimeError, match='could not start'):
        export_onnx(model, out)
    assert out.read_bytes() == b'the previous export'
    assert leftovers(tmp_path, 'm.onnx') == ['m.onnx']


def test_a_file_onnx_rejects_is_not_kept(tmp_path, monkeypatch, quick_export):
    def reject(path, full_check=False):
        raise onnx.checker.ValidationError(f'{path}: bad graph')

    monkeypatch.setattr(onnx.checker, 'check_model', reject)
    with pytest.raises(onnx.checker.ValidationError, match='bad graph'):
        export_onnx(make_model('panoptic'), tmp_path / 'm.onnx')
    assert list(tmp_path.iterdir()) == []


def test_the_exporter_fixing_a_dynamic_dimension_is_an_error(tmp_path, quick_export):
    """torch's exporter falls back to a fixed size where it cannot keep one symbolic."""
    with pytest.raises(RuntimeError, match=r'fixed input dimensions \[2, 3\]'):
        export_onnx(make_model('panoptic'), tmp_path / 'm.onnx', dynamic_size=True)
    assert list(tmp_path.iterdir()) == []


def test_a_bare_core_exports_without_metadata(tmp_path):
    core = make_model('panoptic').eomt
    diffs = export_core(core, tmp_path / 'core.onnx', (64, 64))
    assert diffs[0]['class_logits'] <= 1e-4
    props = onnx.load(str(tmp_path / 'core.onnx')).metadata_props
    assert len(props) == 0
    with pytest.raises(KeyError, match='unknown EoMT ONNX metadata'):
        export_core(core, tmp_path / 'x.onnx', (64, 64), metadata=dict(clases=['a']))


def test_missing_packages_name_the_requirements_file(monkeypatch):
    real = importlib.import_module

    def fail(name, *args):
        if name == 'onnxruntime':
            raise ImportError('No module named onnxruntime')
        return real(name, *args)

    monkeypatch.setattr(importlib, 'import_module', fail)
    with pytest.raises(ImportError, match='requirements/deploy.txt'):
        require('onnxruntime')


def test_the_checkpoint_is_loaded_through_the_inferencer(tmp_path, monkeypatch):
    """One loading path for export and inference: load_model is EoMTInferencer's model."""
    calls = []
    import mmeomt.apis

    class Spy(mmeomt.apis.EoMTInferencer):
        def __init__(self, *args, **kwargs):
            calls.append((args, kwargs))
            super().__init__(*args, **kwargs)

    checkpoint = save_checkpoint(make_model('panoptic'), tmp_path / 'c.pth')
    monkeypatch.setattr(mmeomt.apis, 'EoMTInferencer', Spy)
    model = export_module.load_model(task_config('panoptic'), str(checkpoint))
    assert len(calls) == 1 and calls[0][1]['weights'] == str(checkpoint)
    assert torch.equal(model.eomt.class_head.weight, make_model('panoptic').eomt.class_head.weight)
