"""sentiment-lab: fine-tune, evaluate, analyse and serve transformer sentiment classifiers."""

__version__ = "0.1.0"
