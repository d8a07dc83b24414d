import sys
from pathlib import Path

import torch

# the shared synthetic-catalogue fixtures (tests/catalog_fixtures.py) import as a plain module
sys.path.insert(0, str(Path(__file__).parent))

# one torch thread: on a shared 2-core machine, two threads that compete with other work run
# several times slower than one
torch.set_num_threads(1)
