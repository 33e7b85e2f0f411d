"""pitstop's benchmark harness: pitstop against the tools users would pick instead,
on the same generated data in the same run. Run as ``python -m benches.<name>``."""
