import os

# Deterministic, quiet CPU runs: the suite shares 2 cores with itself (xdist-free) and CI.
os.environ.setdefault('PYTHONHASHSEED', '0')
