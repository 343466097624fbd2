"""`python -m simulator --users N --seed S ...` (see simulator.cli)."""
import sys

from simulator.cli import main

sys.exit(main())
