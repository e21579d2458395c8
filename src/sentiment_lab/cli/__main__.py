"""`python -m sentiment_lab.cli ...`: what torchrun and accelerate launch run on every process."""

from sentiment_lab.cli import main

raise SystemExit(main())
