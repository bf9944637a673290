import os
import sys

# Make tests/ importable as a flat module directory (lgl_samples, official_state_dict_keys).
sys.path.insert(0, os.path.dirname(__file__))
