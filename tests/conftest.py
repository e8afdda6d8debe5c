import os

import torch

os.environ.setdefault('PYTHONHASHSEED', '0')
# The suite's models are tiny: one intra-op thread is faster than two (no synchronisation), and
# stays fast when the 2-core machine is busy with something else.  Tests that train for longer
# may raise it.
torch.set_num_threads(1)
