import sys
from pathlib import Path

# dinov2_formats (the foreign key layouts) lives beside the checkpoint tests.
sys.path.insert(0, str(Path(__file__).resolve().parent / 'test_checkpoint'))
