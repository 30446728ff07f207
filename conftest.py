"""Root pytest configuration: skip torch-only modules in doctest collection without torch."""

import importlib.util

collect_ignore = [] if importlib.util.find_spec("torch") else ["muvera/fde/torch_steps.py"]
