"""The conformance suite that ``pytest --model PATH_OR_ID`` runs: one test per check, per model template."""
