"""ctrbench: a benchmark harness for click-through-rate prediction built around Wukong."""

__version__ = "0.1.0"
