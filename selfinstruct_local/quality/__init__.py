"""The quality gate: what is done with a run's tasks after (or while) they are generated.

- judge.py: the judge's prompt and the parsing of its scores (`TaskJudge`), shared by
  `sigen judge` and `sigen run --judge`;
- judging.py: `sigen judge`, scoring a finished run with a model of its own;
- contamination.py, ngrams.py, benchmarks.py: `sigen decontaminate`, n-gram overlap with
  benchmark files;
- gate.py: the files these write in a run directory (scores.jsonl, contamination.jsonl) and the
  selection `sigen export` makes from them.
"""
