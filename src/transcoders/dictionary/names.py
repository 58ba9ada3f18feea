"""The names the command line offers before anything heavy is imported: dictionary kinds, each activation's name
with its default sparsity coefficient (0: it has none), and other tools' formats (:mod:`.interop`). The classes
in :mod:`.activations` take their defaults from here, and a test keeps this table and ``ACTIVATIONS`` the same
set, in the same order."""

KINDS = ("transcoder", "skip-transcoder", "sae", "clt")
DEFAULT_PENALTIES = {"topk": 0.0, "batchtopk": 0.0, "relu": 0.1, "jumprelu": 1e-3}
FORMATS = ("saelens", "circuit-tracer")  # what `transcoders export` writes
IMPORT_FORMATS = FORMATS + ("sparsify",)  # what `transcoders import` reads
