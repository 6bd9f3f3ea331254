"""`python -m edge.daemon ...` is `edge run ...` (for environments without the console script)."""
import sys

from ..cli import main

sys.exit(main(["run", *sys.argv[1:]]))
