"""The one version string of the msagent package (``msagent.__version__``)."""

__version__ = "0.1.0"
