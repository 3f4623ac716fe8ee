"""`python -m cli ...`: the same as the `digitise` command."""
import sys

from cli import main

sys.exit(main())
