"""Makes tests/nets.py (small nets several test modules share) importable as ``nets``."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
