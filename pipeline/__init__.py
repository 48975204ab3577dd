"""Stage 1, offline on a workstation: generate, annotate, split, train, evaluate."""
