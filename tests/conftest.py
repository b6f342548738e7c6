"""Makes the helper modules in tests/ (nets.py: small nets several test modules share;
graph_text.py: golden-text comparison of printed graphs) importable from any test module."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
