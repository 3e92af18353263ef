"""Reference helpers in Python (transformers, plain PyTorch) that the Rust tests and the
benchmarks compare autoqat against. Scripts put the repo's python/ directory on sys.path."""
