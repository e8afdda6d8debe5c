"""Helpers of the model-zoo tests: a local HTTP server, the tiny test configs and models with
predictable predictions (the fixtures are in conftest.py)."""
import functools
import http.server
import sys
import threading
from pathlib import Path

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from mmeomt.registry import MODELS

TESTS = Path(__file__).resolve().parents[1]
CONFIGS = Path(__file__).resolve().parent / 'configs'
sys.path.insert(0, str(TESTS / 'test_models' / 'test_checkpoint'))  # dinov2_formats


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass


class FileServer:
    """Serves a folder on 127.0.0.1 and counts the file requests it answers."""

    def __init__(self, root: Path):
        self.root = root
        self.requests = []
        server = self

        class Handler(_Handler):
            def do_GET(self):
                server.requests.append(self.path)
                super().do_GET()

        self.httpd = http.server.ThreadingHTTPServer(
            ('127.0.0.1', 0), functools.partial(Handler, directory=str(root)))
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05, ),
                                       daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f'http://127.0.0.1:{self.httpd.server_address[1]}/{path}'

    def put(self, path: str, obj=None, data: bytes = None) -> str:
        """Write ``obj`` (torch.save) or ``data`` under ``path`` and return its URL."""
        file = self.root / path
        file.parent.mkdir(parents=True, exist_ok=True)
        if data is not None:
            file.write_bytes(data)
        else:
            torch.save(obj, file)
        return self.url(path)

    def close(self):
        if not self.thread.is_alive():
            return
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def config(task: str) -> Config:
    """The tiny test config of ``task``: 'panoptic', 'instance' or 'semantic'."""
    return Config.fromfile(CONFIGS / f'eomt_tiny_{task}.py')


def build(task: str, **overrides):
    cfg = config(task)
    init_default_scope(cfg.default_scope)
    torch.manual_seed(0)
    return MODELS.build({**cfg.model, **overrides}).eval()


def predictable(model, label: int, seed: int = 0):
    """Every query predicts class ``label`` (probability ~1) with the same mask, positive on
    part of the image: panoptic and semantic outputs are that class there, instance outputs
    are masks of it, so the visualisations have something to draw."""
    core = model.eomt
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        core.class_head.weight.zero_()
        core.class_head.bias.fill_(-10.0)
        core.class_head.bias[label] = 10.0
        core.mask_head[4].weight.zero_()
        core.mask_head[4].bias.copy_(torch.randn(core.mask_head[4].bias.shape, generator=g))
        core.attn_mask_probs.zero_()  # as released: masked attention annealed away
    return model
