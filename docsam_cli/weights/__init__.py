"""Named weights: the registry, the verified cache, downloads, and `--weights NAME_OR_PATH` resolution."""

from docsam_cli.weights.errors import WeightsError
from docsam_cli.weights.registry import REGISTRY, WeightsEntry, find_entry
from docsam_cli.weights.resolve import ResolvedWeights, resolve_weights

__all__ = ["REGISTRY", "ResolvedWeights", "WeightsEntry", "WeightsError", "find_entry", "resolve_weights"]
