import sys
from pathlib import Path

# the shared synthetic-catalogue fixtures (tests/catalog_fixtures.py) import as a plain module
sys.path.insert(0, str(Path(__file__).parent))
