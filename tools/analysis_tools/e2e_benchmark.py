"""End-to-end inference speed: image file -> segments, per stage, mmeomt vs transformers' EoMT.

Run as ``benchmark.py e2e``.  For each task (panoptic, instance, semantic) and mode (fp32;
bfloat16 autocast with ``--amp``; ``torch.compile`` of the network with ``--compile``; the
network exported to ONNX and run by ONNX Runtime's CPU execution provider with ``--onnx``,
ours only) it times, per image of a folder, after warm-up:

* **decode + pipeline**: reading the file and the config's test pipeline, plus the data
  preprocessor's normalisation (which runs inside ``model.test_step``);
* **network forward**: the EoMT core, timed by wrapping ``model.eomt.forward`` with an
  accumulating clock (a semantic image runs several windows: their time is summed); with
  ``--onnx`` the core is :class:`~mmeomt.deployment.OnnxEoMT`, timed the same way;
* **post-processing**: the rest of the model's predict (upsampling, fusion / windows merging);

and prints the median ms per image of each stage and of the total.  Our side runs through
``EoMTInferencer`` (its host inferencer's ``preprocess`` and ``forward``); transformers' side
through ``EomtImageProcessor``, ``EomtForUniversalSegmentation`` and the processor's
``post_process_*_segmentation``, with the same weights (converted by
:mod:`eomt_to_transformers`) and our thresholds.  Every measurement runs in a fresh subprocess
(transformers must not share a process with mmpretrain), so its peak RSS is that of one side,
task and mode.

The weights are random, except that the class head is fitted by least squares on the mean final
query features over the folder, so that ``--kept`` queries predict a class with a softmax score
near 1 and the others "no object": the post-processing sees a realistic number of confident
queries.  (The masks stay random: they overlap, so panoptic fusion drops most segments.)

Without ``--images``, the real photos bundled with scikit-image are used (15 colour and grey
images, 300-1411 px).  ``--large`` also times one large photo (by default the largest sample
photo resized to 2943 x 1435) in a fresh process per side, for its time and peak memory.
``--tiled`` adds a side ``mmeomt-tiled`` for panoptic and instance models: the same model and
images through tiled inference at native resolution (:mod:`mmeomt.apis.tiling`); its decode
stage is the image decoding and the pipeline of every tile, its network forward the sum over
the tiles, its post-processing the fusion head of every tile and the merging.

``--validation`` (panoptic) times the validation path, ``Runner.test`` as tools/test.py runs it
(the config's test dataloader with its workers, test pipeline, network, metric and hooks), on a
COCO-panoptic set written from the images (and from the large image with ``--large``) with
rectangles as ground truth, loading the benchmark's checkpoint.  Per iteration: the wait for the
data, the network forward, the rest of ``test_step``, the metric's ``process`` and the total;
``--validation-metric CocoPanopticMetric`` runs mmdet's metric instead of the config's.

Examples::

    python tools/analysis_tools/benchmark.py e2e                  # 3 tasks, fp32, EoMT-S
    python tools/analysis_tools/benchmark.py e2e --task panoptic --images DIR --amp --compile
    python tools/analysis_tools/benchmark.py e2e --large --json e2e.json
    python tools/analysis_tools/benchmark.py e2e --task panoptic instance --large --tiled \
        --compare none                                            # tiled vs whole image
    python tools/analysis_tools/benchmark.py e2e --amp --onnx --compare none   # fp32, bf16, ORT
    python tools/analysis_tools/benchmark.py e2e --task panoptic --large --validation \
        --compare none                                            # + tools/test.py's path
"""
import argparse
import json
import math
import resource
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark import NUM_BLOCKS, REFERENCE_DIR, REPO, reference_env, run_json, summary  # noqa

TASKS = ('panoptic', 'instance', 'semantic')
# The configs the default model sizes come from; --arch sets the ViT size and num_blocks on
# top (there are no ViT-S instance or semantic configs).
TASK_CONFIGS = {
    'panoptic': 'configs/eomt/eomt_vit-s_8xb2-24e_coco-panoptic-640.py',
    'instance': 'configs/eomt/eomt_vit-l_8xb2-12e_coco-instance-640.py',
    'semantic': 'configs/eomt/eomt_vit-l_8xb2-31e_ade20k-semantic-512.py',
}
STAGES = ('decode', 'forward', 'post', 'total')
STAGE_NAMES = dict(decode='decode + pipeline', forward='network forward',
                   post='post-processing', total='total')
COUNTS = dict(kept='kept queries / image', segments='outputs / image',
              windows='network inputs / image')
# scikit-image's bundled photographs (its synthetic images and tiny samples left out).
SAMPLE_PHOTOS = ('astronaut.png', 'brick.png', 'camera.png', 'cell.png', 'chelsea.png',
                 'coffee.png', 'coins.png', 'grass.png', 'gravel.png', 'hubble_deep_field.jpg',
                 'ihc.png', 'moon.png', 'motorcycle_left.png', 'retina.jpg', 'rocket.jpg')
LARGE_SIZE = (2943, 1435)  # (width, height)


# ------------------------------------------------------------------------------------------
# Images
# ------------------------------------------------------------------------------------------
def write_sample_images(folder: str, names: Sequence[str] = SAMPLE_PHOTOS,
                        max_side: Optional[int] = None) -> List[Path]:
    """Copy scikit-image's sample photos into ``folder`` (PNG / JPEG as bundled).

    Args:
        max_side: if given, shrink each photo so that its long side is at most this (for
            smoke tests); the file is then re-encoded in its format.

    Returns:
        the written paths, in the order of ``names``.
    """
    import cv2
    import skimage
    source = Path(skimage.__file__).parent / 'data'
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = folder / name
        if max_side is None:
            shutil.copyfile(source / name, path)
        else:
            image = cv2.imread(str(source / name), cv2.IMREAD_UNCHANGED)
            scale = min(1.0, max_side / max(image.shape[:2]))
            size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
            cv2.imwrite(str(path), cv2.resize(image, size, interpolation=cv2.INTER_AREA))
        paths.append(path)
    return paths


def write_large_image(folder: str, source: Path, size: Tuple[int, int] = LARGE_SIZE) -> Path:
    """``source`` resized (bilinear) to ``size = (width, height)``, written as a PNG."""
    import cv2
    path = Path(folder) / f'large_{size[0]}x{size[1]}.png'
    image = cv2.imread(str(source), cv2.IMREAD_COLOR)
    cv2.imwrite(str(path), cv2.resize(image, size, interpolation=cv2.INTER_LINEAR))
    return path


def list_images(folder: str) -> List[Path]:
    suffixes = {'.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp'}
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in suffixes)


# ------------------------------------------------------------------------------------------
# Timing helpers shared by both sides
# ------------------------------------------------------------------------------------------
def now(device: str) -> float:
    if device.startswith('cuda'):
        torch.cuda.synchronize()
    return time.perf_counter()


class Clock:
    """Seconds spent in the callables it wraps, summed since ``reset``."""

    def __init__(self, device: str):
        self.device = device
        self.seconds = 0.0

    def reset(self) -> None:
        self.seconds = 0.0

    def wrap(self, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            start = now(self.device)
            out = fn(*args, **kwargs)
            self.seconds += now(self.device) - start
            return out
        return timed


def bf16_autocast(fn: Callable, device: str) -> Callable:
    def run(*args, **kwargs):
        with torch.autocast(device.split(':')[0], dtype=torch.bfloat16):
            return fn(*args, **kwargs)
    return run


def confident_queries(class_logits: torch.Tensor, threshold: float) -> float:
    """Queries per image (mean over the windows of ``(B, Q, C + 1)``) whose best class is not
    "no object" and has a softmax score above ``threshold``."""
    scores, labels = class_logits.float().softmax(-1).max(-1)
    kept = (labels != class_logits.shape[-1] - 1) & (scores > threshold)
    return kept.sum().item() / class_logits.shape[0]


def peak_rss_mib() -> float:
    """Peak resident memory of this process: ``VmHWM`` of ``/proc/self/status`` where there is
    one, because Linux carries ``ru_maxrss`` over fork and exec, so a child's starts at its
    parent's peak; ``ru_maxrss`` elsewhere."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == 'darwin' else rss / 1024


def time_images(step: Callable[[Path], dict], images: List[Path], warmup: int) -> dict:
    """Run ``step`` on ``warmup`` images, then time it on every image.

    ``step(path)`` returns the seconds of each of :data:`STAGES` and per-image counts
    (``kept``, ``segments``, ``windows``).  Returns the median ms per image of each stage
    (``ms``), the per-image records (ms) and the peak RSS of this process.
    """
    for i in range(warmup):
        step(images[i % len(images)])
    return medians([dict(step(path), image=path.name) for path in images], STAGES)


def medians(records: List[dict], stages: Sequence[str]) -> dict:
    """The median ms per image of each of ``stages`` over ``records`` (seconds, converted to
    ms in place), the records and the peak RSS of this process."""
    ms = {s: summary(s, [r[s] for r in records], 1)['ms_per_image'] for s in stages}
    for record in records:
        record.update({s: 1000 * record[s] for s in stages})
    return dict(ms=ms, per_image=records, peak_rss_mib=peak_rss_mib())


def network_core(model, spec: dict) -> Callable:
    """``model.eomt.forward`` as ``spec['mode']`` runs it: compiled, under bf16 autocast, or
    as it is."""
    core = model.eomt.forward
    if spec['mode'] == 'compile':
        core = torch.compile(core)
    if spec['mode'] == 'amp':
        core = bf16_autocast(core, spec['device'])
    return core


# ------------------------------------------------------------------------------------------
# Our side
# ------------------------------------------------------------------------------------------
def task_config(task: str, arch: str, config: Optional[str] = None) -> Tuple[str, dict]:
    """The config of ``task`` and the overrides that make it EoMT-``arch`` (none for an
    explicit ``config``)."""
    if config is not None:
        return config, {}
    return (str(REPO / TASK_CONFIGS[task]),
            {'model.eomt.backbone.arch': arch, 'model.eomt.num_blocks': NUM_BLOCKS[arch]})


def load_config(path: str, overrides: dict):
    """The config with ``overrides`` merged (as ``--cfg-options``) and without pretrained
    initialisation (the benchmark's weights come from its own checkpoint)."""
    from mmengine.config import Config
    cfg = Config.fromfile(path)
    cfg.merge_from_dict(overrides)
    cfg.model.eomt.backbone.pop('init_cfg', None)
    return cfg


def _batch_data(batch):
    # mmdet's batches are [original inputs, data], mmseg's the data
    return batch[1] if isinstance(batch, (list, tuple)) else batch


def fit_class_head(inferencer, images: List[Path], kept: int) -> List[int]:
    """Fit the class head so that the first ``kept`` queries are confident.

    The final query features (the class head's input) are averaged over ``images`` (and
    windows), and the head is solved by least squares (minimum norm) for logits of 12 on one
    class for each of the first ``kept`` queries (classes spread over things and stuff) and
    on "no object" for the others, 0 elsewhere: a softmax score above 0.999 on the mean
    features.

    Returns:
        the class given to each kept query.
    """
    model = inferencer.model
    core = model.eomt
    if not 0 <= kept <= core.num_queries:
        raise SystemExit(f'--kept must be in [0, {core.num_queries}] (the queries), got {kept}')
    features = []
    handle = core.class_head.register_forward_hook(
        lambda module, args, out: features.append(args[0].detach().flatten(0, -3)))
    for path in images:
        inferencer.forward(_batch_data(next(iter(inferencer.preprocess([str(path)])))))
    handle.remove()
    mean = torch.cat(features).float().mean(0)  # (Q, D)
    num_classes = core.num_classes
    labels = torch.linspace(0, num_classes - 1, kept).round().long() if kept else \
        torch.zeros(0, dtype=torch.long)
    targets = torch.zeros(core.num_queries, num_classes + 1)
    targets[torch.arange(kept), labels] = 12.0
    targets[kept:, num_classes] = 12.0
    design = torch.cat([mean, torch.ones(len(mean), 1)], dim=1).double()
    solution = torch.linalg.pinv(design) @ targets.double()  # (D + 1, C + 1)
    with torch.no_grad():
        core.class_head.weight.copy_(solution[:-1].T)
        core.class_head.bias.copy_(solution[-1])
    return labels.tolist()


def measure_mmeomt(spec: dict) -> dict:
    from mmeomt.apis import EoMTInferencer
    cfg = load_config(spec['config'], spec['overrides'])
    if spec['mode'] == 'onnxruntime':
        inferencer = EoMTInferencer(cfg, weights=spec['onnx'], device=spec['device'],
                                    backend='onnxruntime').inferencer
    else:
        inferencer = EoMTInferencer(cfg, weights=spec['checkpoint'],
                                    device=spec['device']).inferencer
    model, device = inferencer.model, spec['device']
    num_classes = model.eomt.num_classes
    network, preprocessor = Clock(device), Clock(device)
    core = network_core(model, spec)
    class_logits = []  # the final (B, Q, C + 1) of each core call of the current image

    def core_forward(*args, **kwargs):
        out = core(*args, **kwargs)
        class_logits.append(out[1][-1])
        return out

    model.eomt.forward = network.wrap(core_forward)
    model.data_preprocessor.forward = preprocessor.wrap(model.data_preprocessor.forward)

    if spec.get('tiled') is not None:
        return time_images(tiled_step(inferencer, spec, network, preprocessor, class_logits),
                           [Path(p) for p in spec['images']], spec['warmup'])

    def step(path: Path) -> dict:
        network.reset()
        preprocessor.reset()
        class_logits.clear()
        start = now(device)
        data = _batch_data(next(iter(inferencer.preprocess([str(path)], batch_size=1))))
        loaded = now(device)
        sample = inferencer.forward(data)[0]
        end = now(device)
        windows = torch.cat(class_logits)
        return dict(decode=loaded - start + preprocessor.seconds, forward=network.seconds,
                    post=end - loaded - preprocessor.seconds - network.seconds,
                    total=end - start, windows=len(windows),
                    kept=confident_queries(windows, spec['threshold']),
                    segments=count_predictions(sample, num_classes))

    return time_images(step, [Path(p) for p in spec['images']], spec['warmup'])


def tiled_step(inferencer, spec: dict, network: Clock, preprocessor: Clock,
               class_logits: List[torch.Tensor]) -> Callable[[Path], dict]:
    """``step`` of :func:`time_images` for tiled inference (``spec['tiled']``: the overlap,
    ``spec['tile_batch_size']`` tiles per forward); ``network`` and ``preprocessor`` already
    wrap the core and the data preprocessor."""
    from mmeomt.apis.tiling import TiledPredictor
    device, num_classes = spec['device'], inferencer.model.eomt.num_classes
    predictor = TiledPredictor(inferencer, spec['tiled'])
    decoder = Clock(device)  # image decoding and every tile's test pipeline
    predictor.load = decoder.wrap(predictor.load)
    for transform in inferencer.pipeline.transforms:
        transform.transform = decoder.wrap(transform.transform)

    def step(path: Path) -> dict:
        for clock in (network, preprocessor, decoder):
            clock.reset()
        class_logits.clear()
        start = now(device)
        sample = predictor([str(path)], batch_size=spec['tile_batch_size'])[0]
        end = now(device)
        windows = torch.cat(class_logits)
        decode = decoder.seconds + preprocessor.seconds
        return dict(decode=decode, forward=network.seconds,
                    post=end - start - decode - network.seconds, total=end - start,
                    windows=len(windows), kept=confident_queries(windows, spec['threshold']),
                    segments=count_predictions(sample, num_classes))

    return step


def count_predictions(sample, num_classes: int) -> int:
    """Panoptic segments, instances, or semantic classes present in an output data sample."""
    if 'pred_panoptic_seg' in sample:
        ids = sample.pred_panoptic_seg.sem_seg.unique()
        return int((ids != num_classes).sum())  # mmdet's void is num_classes
    if 'pred_instances' in sample:
        return len(sample.pred_instances)
    return sample.pred_sem_seg.data.unique().numel()


# ------------------------------------------------------------------------------------------
# transformers' side (runs with .venv/reference on the path)
# ------------------------------------------------------------------------------------------
def measure_transformers(spec: dict) -> dict:
    from transformers import EomtConfig, EomtForUniversalSegmentation, EomtImageProcessor
    device = spec['device']
    model = EomtForUniversalSegmentation(EomtConfig(**spec['hf_config']))
    missing, unexpected = model.load_state_dict(torch.load(spec['hf_weights']), strict=False)
    if unexpected or any(not k.startswith('criterion.') for k in missing):
        raise RuntimeError(f'weights do not fit: missing {missing}, unexpected {unexpected}')
    model = model.eval().to(device)
    processor = EomtImageProcessor(**spec['processor'])
    post_process = getattr(processor, f'post_process_{spec["task"]}_segmentation')
    forward = torch.compile(model) if spec['mode'] == 'compile' else model
    if spec['mode'] == 'amp':
        forward = bf16_autocast(forward, device)

    @torch.no_grad()
    def step(path: Path) -> dict:
        start = now(device)
        image = Image.open(path).convert('RGB')
        inputs = processor(images=image, return_tensors='pt')
        pixel_values = inputs['pixel_values'].to(device)
        loaded = now(device)
        outputs = forward(pixel_values=pixel_values, patch_offsets=inputs.get('patch_offsets'))
        computed = now(device)
        result = post_process(outputs, target_sizes=[image.size[::-1]], **spec['post'])[0]
        end = now(device)
        segments = result.unique().numel() if spec['task'] == 'semantic' else \
            len(result['segments_info'])
        return dict(decode=loaded - start, forward=computed - loaded, post=end - computed,
                    total=end - start, windows=len(pixel_values), segments=segments,
                    kept=confident_queries(outputs.class_queries_logits, spec['threshold']))

    return time_images(step, [Path(p) for p in spec['images']], spec['warmup'])


# ------------------------------------------------------------------------------------------
# The validation path (tools/test.py's Runner.test), panoptic
# ------------------------------------------------------------------------------------------
VALIDATION_TIMED = 3  # timed iterations at least (each image of a short list is repeated)
VALIDATION_STAGES = ('decode', 'forward', 'post', 'metric', 'total')


def write_panoptic_set(folder: Path, images: List[Path], classes: Sequence[str],
                       thing_classes: Sequence[str], repeats: int, warmup: int) -> Path:
    """A COCO-panoptic validation set of ``images`` (as JPEG): ``warmup`` copies of the first,
    then each image ``repeats`` times.  The ground truth of each cuts the image into three
    stuff bands and twelve thing rectangles (on a 4 x 3 grid) of the dataset's first stuff and
    thing classes.  Returns the annotation file; the PNGs lie in ``panoptic/`` beside it."""
    import cv2
    import numpy as np

    from mmeomt.datasets.synthetic.files import bbox
    from mmeomt.utils.panopticapi_compat import id2rgb
    for sub in ('images', 'panoptic'):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    names = list(classes)
    stuff = [n for n in names if n not in thing_classes][:3] or names[:1]
    things = [n for n in names if n in thing_classes][:4] or names[:1]
    categories = [dict(id=i + 1, name=n, isthing=int(n in thing_classes), supercategory='x')
                  for i, n in enumerate(names)]
    cat_id = {c['name']: c['id'] for c in categories}
    entries, annotations = [], []
    sequence = images[:1] * warmup + list(images) * repeats
    for index, path in enumerate(sequence):
        stem = f'{index:03d}_{path.stem}'
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        height, width = image.shape[:2]
        cv2.imwrite(str(folder / 'images' / f'{stem}.jpg'), image)
        ids = np.zeros((height, width), np.int64)
        kinds = []
        for band in range(3):
            ids[band * height // 3:(band + 1) * height // 3] = band + 1
            kinds.append((band + 1, stuff[band % len(stuff)]))
        for row in range(3):
            for col in range(4):
                k = 4 * row + col
                y0, x0 = (5 * row + 1) * height // 15, (5 * col + 1) * width // 20
                ids[y0:y0 + 3 * height // 15, x0:x0 + 3 * width // 20] = 1000 + k
                kinds.append((1000 + k, things[k % len(things)]))
        segments = []
        for seg_id, name in kinds:
            mask = ids == seg_id
            segments.append(dict(id=seg_id, category_id=cat_id[name], iscrowd=0,
                                 area=int(mask.sum()), bbox=bbox(mask)))
        cv2.imwrite(str(folder / 'panoptic' / f'{stem}.png'), id2rgb(ids)[:, :, ::-1])
        entries.append(dict(id=index + 1, file_name=f'{stem}.jpg', height=height, width=width))
        annotations.append(dict(image_id=index + 1, file_name=f'{stem}.png',
                                segments_info=segments))
    ann_file = folder / 'panoptic.json'
    ann_file.write_text(json.dumps(dict(images=entries, annotations=annotations,
                                        categories=categories)))
    return ann_file


def measure_validation(spec: dict) -> dict:
    """``Runner.test`` of the config (what tools/test.py runs: its test dataloader with
    workers, test pipeline, metric and hooks) on a COCO-panoptic set of ``spec['images']``,
    loading the benchmark's checkpoint.  Per iteration: the data wait, network forward, the
    rest of ``test_step`` (data preprocessor + post-processing), the metric's ``process`` and
    the total; the median of each over the iterations after ``spec['warmup']``."""
    from mmdet.registry import DATASETS
    from mmengine.hooks import Hook

    from mmeomt.utils.tool_config import build_runner, load_tool_config
    device, warmup = spec['device'], spec['warmup']
    images = [Path(p) for p in spec['images']]
    work_dir = Path(spec['work_dir']) / f'validation_{spec["mode"]}_{len(images)}'
    cfg = load_tool_config(spec['config'], dict(spec['overrides']), str(work_dir / 'runner'))
    dataset = cfg.test_dataloader.dataset
    metainfo = dataset.get('metainfo') or DATASETS.get(dataset.type).METAINFO
    repeats = math.ceil(VALIDATION_TIMED / len(images))
    ann_file = write_panoptic_set(work_dir / 'data', images, metainfo['classes'],
                                  metainfo['thing_classes'], repeats, warmup)
    dataset.update(data_root=str(ann_file.parent), ann_file=ann_file.name,
                   data_prefix=dict(img='images/', seg='panoptic/'), test_mode=True)
    evaluator = cfg.get('test_evaluator')
    metric = spec.get('metric') or (evaluator.get('type') if isinstance(evaluator, dict)
                                    else None) or 'mmeomt.CocoPanopticMetric'
    cfg.test_evaluator = dict(type=metric, ann_file=str(ann_file),
                              seg_prefix=str(ann_file.parent / 'panoptic') + '/')
    cfg.test_cfg = cfg.get('test_cfg') or dict(type='TestLoop')
    cfg.load_from, cfg.resume = spec['checkpoint'], False
    runner = build_runner(cfg)
    network, test_step, metric_clock = Clock(device), Clock(device), Clock(device)

    class IterationClock(Hook):

        def __init__(self):
            self.stamps: List[float] = []
            self.records: List[dict] = []

        def before_test_epoch(self, runner) -> None:
            model = runner.model
            model.eomt.forward = network.wrap(network_core(model, spec))
            model.test_step = test_step.wrap(model.test_step)
            evaluator = runner.test_loop.evaluator
            evaluator.process = metric_clock.wrap(evaluator.process)
            self.stamps.append(now(device))

        def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
            self.stamps.append(now(device))
            total = self.stamps[-1] - self.stamps[-2]
            self.records.append(dict(
                image=Path(data_batch['data_samples'][0].img_path).name, total=total,
                forward=network.seconds, post=test_step.seconds - network.seconds,
                metric=metric_clock.seconds,
                decode=total - test_step.seconds - metric_clock.seconds))
            for clock in (network, test_step, metric_clock):
                clock.reset()

    clock = IterationClock()
    runner.register_hook(clock, priority='LOWEST')
    metrics = runner.test()
    return dict(medians(clock.records[warmup:], VALIDATION_STAGES), metric=metric,
                metrics={k: float(v) for k, v in metrics.items()
                         if isinstance(v, (int, float))})


def print_validation(title: str, result: dict) -> None:
    print(f'\n{title}')
    if 'error' in result:
        print(f'  failed: {result["error"]}')
        return
    ms = result['ms']
    names = dict(STAGE_NAMES, decode='data (wait for the loader)',
                 post='test_step - forward', metric=f'metric.process ({result["metric"]})')
    for stage in VALIDATION_STAGES:
        print(f'  {names[stage]:<46}{ms[stage]:10.1f} ms')
    print(f'  {"peak RSS (MiB), main process":<46}{result["peak_rss_mib"]:10.1f}')
    print(f'  test_step / forward: {(ms["forward"] + ms["post"]) / ms["forward"]:.2f}x, '
          f'whole iteration / forward: {ms["total"] / ms["forward"]:.2f}x')


# ------------------------------------------------------------------------------------------
# Orchestration
# ------------------------------------------------------------------------------------------
SIDES = {'mmeomt': measure_mmeomt, 'mmeomt-tiled': measure_mmeomt,
         'transformers': measure_transformers, 'mmeomt-test': measure_validation}


def run_sides(spec: dict, sides: List[str], mode: str, images: List[str]) -> Dict[str, dict]:
    """Each side's measurement of ``images`` in ``mode``, each in a fresh subprocess;
    ``{'error': <last line of its stderr>, 'log': ...}`` for one that failed."""
    results = {}
    for side in sides:
        env = reference_env() if side == 'transformers' else None
        side_spec = dict(spec, side=side, mode=mode, images=images)
        if side != 'mmeomt-tiled':
            side_spec['tiled'] = None
        command = [sys.executable, __file__, '--worker', json.dumps(side_spec)]
        try:
            results[side] = run_json(command, env=env)
        except RuntimeError as error:
            lines = [line for line in str(error).splitlines() if line.strip()]
            results[side] = dict(error=lines[-1], log=str(error))
    return results


def prepare_task(task: str, args, images: List[Path], work_dir: Path) -> dict:
    """Build our model, fit its class head, save both checkpoints; the specs of both sides."""
    from mmeomt.apis import EoMTInferencer
    from mmeomt.utils import atomic_torch_save
    from eomt_to_transformers import eomt_to_transformers, transformers_config
    config, overrides = task_config(task, args.arch, args.config)
    torch.manual_seed(0)
    with warnings.catch_warnings():  # of random weights: they are made below
        warnings.filterwarnings('ignore', 'No weights given')
        inferencer = EoMTInferencer(load_config(config, overrides), device=args.device)
    inferencer = inferencer.inferencer
    model = inferencer.model
    model.eomt.attn_mask_probs.zero_()  # as after training: no masked attention at inference
    labels = fit_class_head(inferencer, images, args.kept)
    checkpoint = work_dir / f'{task}.pth'
    atomic_torch_save(dict(state_dict=model.state_dict(), meta={}), str(checkpoint))
    onnx_file = None
    if args.onnx:
        from mmeomt.deployment import export_onnx
        onnx_file = str(work_dir / f'{task}.onnx')
        export_onnx(model, onnx_file)  # the test pipeline's input size, any batch size
    hf_weights = work_dir / f'{task}_transformers.pt'
    torch.save(eomt_to_transformers(model.eomt.state_dict()), hf_weights)

    test_cfg = model.test_cfg
    threshold = test_cfg.get('object_mask_thr', 0.8)
    if task == 'semantic':
        crop = min(test_cfg['crop_size'])
        processor = dict(size=dict(shortest_edge=crop, longest_edge=None), do_split_image=True)
        post = {}
    else:
        crop = model.eomt.backbone.img_size[0]
        processor = dict(size=dict(shortest_edge=crop, longest_edge=crop), do_pad=True)
        # Instance: transformers keeps every query scoring >= its threshold (default 0.5), it
        # has no top-k; ours keeps the top test_cfg.max_per_image.
        post = {} if task == 'instance' else dict(
            threshold=threshold, mask_threshold=0.5,
            overlap_mask_area_threshold=test_cfg.get('iou_thr', 0.8),
            stuff_classes=list(range(model.num_things_classes, model.num_classes)))
    vit = model.eomt.backbone
    return dict(
        config=config, overrides=overrides, kept_classes=labels,
        model=f'{vit.embed_dims} dims x {vit.num_layers} blocks, {model.eomt.num_queries} '
        f'queries, {model.eomt.num_classes} classes, crop {crop}',
        spec=dict(task=task, device=args.device, threads=args.threads, warmup=args.warmup,
                  threshold=threshold, config=config, overrides=overrides,
                  checkpoint=str(checkpoint), onnx=onnx_file,
                  hf_config=transformers_config(model.eomt),
                  hf_weights=str(hf_weights), processor=processor, post=post))


def print_table(title: str, results: Dict[str, dict]) -> None:
    print(f'\n{title}')
    sides = [s for s in SIDES if s in results]
    failed = [s for s in sides if 'error' in results[s]]
    for side in failed:
        print(f'  {side}: failed: {results[side]["error"]}')
    sides = [s for s in sides if s not in failed]
    if not sides:
        return
    both = len(sides) == 2  # a ratio column: first side / second side
    print(f'  {"median ms per image":<24}' + ''.join(f'{s:>14}' for s in sides) +
          (f'{"ratio":>9}' if both else ''))
    rows = [(STAGE_NAMES[s], [results[side]['ms'][s] for side in sides]) for s in STAGES]
    rows.append(('peak RSS (MiB)', [results[side]['peak_rss_mib'] for side in sides]))
    for name, values in rows:
        ratio = f'{"x%.2f" % (values[0] / values[1]):>9}' if both and values[1] else ''
        print(f'  {name:<24}' + ''.join(f'{v:14.1f}' for v in values) + ratio)
    for key, name in COUNTS.items():
        print(f'  {name:<24}' + ''.join(
            f'{_spread([r[key] for r in results[side]["per_image"]]):>14}' for side in sides))
    ms = {side: results[side]['ms'] for side in sides}
    overhead = ', '.join(f'{side} {100 * (m["decode"] + m["post"]) / m["forward"]:.1f} %'
                         for side, m in ms.items())
    print(f'  post-processing + pipeline as % of forward: {overhead}')
    if 'transformers' in ms and 'mmeomt' in ms:
        speedup = ms['transformers']['total'] / ms['mmeomt']['total']
        print(f'  end-to-end speed-up vs transformers: x{speedup:.2f}')


def print_modes(title: str, modes: Dict[str, Dict[str, dict]]) -> None:
    """Our side's median forward and total per mode (fp32, amp, compile, onnxruntime)."""
    print(f'\n{title}')
    ok = {m: r['mmeomt'] for m, r in modes.items() if 'error' not in r.get('mmeomt', {'error': 1})}
    if not ok:
        return
    print(f'  {"median ms per image":<24}' + ''.join(f'{m:>14}' for m in ok))
    for stage in ('forward', 'total'):
        print(f'  {STAGE_NAMES[stage]:<24}' + ''.join(f'{r["ms"][stage]:14.1f}'
                                                       for r in ok.values()))


def _spread(values: List[float]) -> str:
    low, high = min(values), max(values)
    mid = sorted(values)[len(values) // 2]
    fmt = '{:.0f}' if all(float(v).is_integer() for v in values) else '{:.1f}'
    return fmt.format(mid) if low == high else \
        f'{fmt.format(mid)} ({fmt.format(low)}-{fmt.format(high)})'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog='benchmark.py e2e', description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--task', nargs='+', choices=TASKS, default=list(TASKS))
    parser.add_argument('--images', help="folder of images (default: scikit-image's photos)")
    parser.add_argument('--num-images', type=int, help='use only the first N images')
    parser.add_argument('--arch', default='small', choices=sorted(NUM_BLOCKS))
    parser.add_argument('--config', help='model config (one --task only; default: see '
                        'TASK_CONFIGS, resized to --arch)')
    parser.add_argument('--kept', type=int, default=30,
                        help='queries made confident by the fitted class head')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=torch.get_num_threads())
    parser.add_argument('--warmup', type=int, default=1, help='untimed images first')
    parser.add_argument('--amp', action='store_true', help='also time bfloat16 autocast')
    parser.add_argument('--compile', action='store_true',
                        help='also time torch.compile of the network')
    parser.add_argument('--onnx', action='store_true',
                        help='also time the network exported to ONNX, run by ONNX Runtime (CPU '
                        'execution provider; ours only)')
    parser.add_argument('--large', nargs='?', const='', metavar='IMAGE',
                        help='also time one large image (default: the largest photo resized '
                        f'to {LARGE_SIZE[0]}x{LARGE_SIZE[1]}), fresh process per side')
    parser.add_argument('--compare', choices=['transformers', 'none'], default='transformers')
    parser.add_argument('--tiled', nargs='?', type=float, const=0.25, metavar='OVERLAP',
                        help='panoptic and instance: also time tiled inference at native '
                        'resolution (side mmeomt-tiled), tiles overlapping by OVERLAP '
                        '(default 0.25)')
    parser.add_argument('--tile-batch-size', type=int, default=1,
                        help='with --tiled: tiles per network forward')
    parser.add_argument('--validation', action='store_true',
                        help="panoptic: also time tools/test.py's path (Runner.test: the test "
                        'dataloader and pipeline, network, metric and hooks) on a COCO-panoptic '
                        'set of the images, and of the large image with --large')
    parser.add_argument('--validation-metric', metavar='TYPE',
                        help="with --validation: the metric's type, e.g. CocoPanopticMetric "
                        "for mmdet's (default: the config's)")
    parser.add_argument('--json', help='also write the results to this JSON file')
    args = parser.parse_args(argv)
    if args.validation and 'panoptic' not in args.task:
        parser.error('--validation needs --task panoptic')
    if args.config and len(args.task) != 1:
        parser.error('--config needs exactly one --task')
    if args.tiled is not None and not 0 <= args.tiled < 1:
        parser.error(f'--tiled: the overlap must be in [0, 1), got {args.tiled}')
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.compare == 'transformers' and not REFERENCE_DIR.is_dir():
        raise SystemExit(f'--compare transformers needs {REFERENCE_DIR} (run `make setup`); '
                         'or pass --compare none')
    torch.set_num_threads(args.threads)
    sides = ['mmeomt'] + (['transformers'] if args.compare == 'transformers' else [])
    modes = ['fp32'] + (['amp'] if args.amp else []) + (['compile'] if args.compile else []) + \
        (['onnxruntime'] if args.onnx else [])
    with tempfile.TemporaryDirectory(prefix='eomt_e2e_') as tmp:
        work_dir = Path(tmp)
        images = list_images(args.images) if args.images else \
            write_sample_images(work_dir / 'images')
        images = images[:args.num_images]
        if not images:
            raise SystemExit(f'no images in {args.images}')
        large = None
        if args.large is not None:
            largest = max(images, key=lambda p: math.prod(Image.open(p).size))
            large = Path(args.large) if args.large else write_large_image(work_dir, largest)
        report = dict(args=vars(args), images=[p.name for p in images], tasks={})
        print(f'{len(images)} images, {args.device} ({args.threads} threads), warm-up '
              f'{args.warmup}; each measurement in its own process')
        for task in args.task:
            prepared = prepare_task(task, args, images, work_dir)
            spec = prepared.pop('spec')
            overrides = ', '.join(f'{k}={v!r}' for k, v in prepared['overrides'].items())
            print(f'\n== {task}: {Path(prepared["config"]).name}'
                  f'{f" with {overrides}" if overrides else ""} ({prepared["model"]}); '
                  f'class head fitted for {args.kept} confident queries')
            entry = report['tasks'][task] = dict(prepared, modes={}, large={})
            task_sides = sides
            if args.tiled is not None and task != 'semantic':  # semantic slides windows
                task_sides = sides[:1] + ['mmeomt-tiled'] + sides[1:]
                spec.update(tiled=args.tiled, tile_batch_size=args.tile_batch_size)
            for mode in modes:
                mode_sides = ['mmeomt'] if mode == 'onnxruntime' else task_sides
                entry['modes'][mode] = run_sides(spec, mode_sides, mode,
                                                 [str(p) for p in images])
                print_table(f'{task}, {mode}, {len(images)} images:', entry['modes'][mode])
                if large is not None:
                    entry['large'][mode] = run_sides(spec, mode_sides, mode, [str(large)])
                    print_table(f'{task}, {mode}, one large image ({large.name}):',
                                entry['large'][mode])
            if args.validation and task == 'panoptic':
                entry['validation'] = {}
                validation_spec = dict(spec, work_dir=str(work_dir),
                                       metric=args.validation_metric)
                sets = [('images', images)] + ([('large', [large])] if large else [])
                for mode in (m for m in modes if m != 'onnxruntime'):
                    for name, paths in sets:
                        result = run_sides(validation_spec, ['mmeomt-test'], mode,
                                           [str(p) for p in paths])['mmeomt-test']
                        entry['validation'][f'{mode}_{name}'] = result
                        print_validation(f'{task}, {mode}, validation path (Runner.test), '
                                         f'{len(paths)} image(s) of {name}:', result)
            if len(modes) > 1:
                print_modes(f'{task}, mmeomt per mode, {len(images)} images:', entry['modes'])
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(report, f, indent=2)
    return report


def worker(spec: dict) -> None:
    torch.set_num_threads(spec['threads'])
    torch.manual_seed(0)
    print(json.dumps(SIDES[spec['side']](spec)))


if __name__ == '__main__':
    if len(sys.argv) == 3 and sys.argv[1] == '--worker':
        worker(json.loads(sys.argv[2]))
    else:
        main()
