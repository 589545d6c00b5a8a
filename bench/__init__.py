"""Speed, memory and cost bench of untrac (issue 6): ``python -m bench [--quick] [--paper]``."""
