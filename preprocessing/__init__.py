"""MusicFace dataset preparation: one module per DAG stage, each a pure function plus a CLI.

``python -m preprocessing.<stage> --help`` lists a stage's arguments; the Snakemake rules in
``workflow/rules/<stage>.smk`` call exactly these CLIs.
"""
__version__ = "0.1.0"
