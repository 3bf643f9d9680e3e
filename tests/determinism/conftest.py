"""The determinism tests import their shared tiny codecs (``det_codecs``) from this folder."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
