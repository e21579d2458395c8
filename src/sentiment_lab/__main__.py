import sys

from sentiment_lab.cli import main

sys.exit(main())
